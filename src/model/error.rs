/// Why the model refused to decide: the input, not the model, is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    #[error("option `{name}` must be {requirement}, got {value}")]
    InvalidOption {
        name: &'static str,
        requirement: &'static str,
        value: f64,
    },
    #[error("cost must be {requirement}, got {value}")]
    InvalidCost {
        requirement: &'static str,
        value: f64,
    },
    #[error("now must be a finite number of epoch milliseconds, got {0}")]
    InvalidNow(f64),
}

pub(crate) fn positive(name: &'static str, value: f64) -> Result<f64, ModelError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(ModelError::InvalidOption {
            name,
            requirement: "a positive finite number",
            value,
        })
    }
}

pub(crate) fn positive_integer(name: &'static str, value: f64) -> Result<f64, ModelError> {
    if value.is_finite() && value >= 1.0 && value.fract() == 0.0 {
        Ok(value)
    } else {
        Err(ModelError::InvalidOption {
            name,
            requirement: "a whole number of at least 1",
            value,
        })
    }
}

/// A rate-limit cost: finite and not negative (0 asks without consuming).
pub(crate) fn cost(value: f64) -> Result<f64, ModelError> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(ModelError::InvalidCost {
            requirement: "a finite number >= 0",
            value,
        })
    }
}

pub(crate) fn now(value: f64) -> Result<f64, ModelError> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(ModelError::InvalidNow(value))
    }
}
