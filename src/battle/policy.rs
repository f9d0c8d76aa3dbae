//! What the battle needs to know about a scenario's policies, read with the reference server's
//! own policy reader: the strategy and key prefix the direct door uses (so it shares state with
//! the fleet: one oracle, two doors), and whether a policy is leasable through `Fleet.Reserve`.

use std::collections::BTreeMap;

use crate::model::Strategy;
use crate::server::policy::{PolicyError, PolicyKind, PolicySet};

#[derive(Debug, Clone, PartialEq)]
pub struct PolicyFacts {
    /// Store keys are `<prefix>:<identity>`.
    pub prefix: String,
    /// The rate strategy, when the policy is a rate limiter.
    pub strategy: Option<Strategy>,
    /// Leasable through `Fleet.Reserve`.
    pub federated: bool,
    /// What kind of policy it is, for messages.
    pub label: String,
}

/// Reads the facts of every policy in a policy file's text; `file` names it in errors.
pub fn read(file: &str, yaml: &str) -> Result<BTreeMap<String, PolicyFacts>, PolicyError> {
    let set = PolicySet::parse(file, yaml)?;
    Ok(set
        .policies
        .iter()
        .map(|(name, policy)| {
            let (strategy, federated) = match &policy.kind {
                PolicyKind::Rate {
                    strategy,
                    federated,
                    ..
                } => (Some(*strategy), federated.is_some()),
                _ => (None, false),
            };
            let facts = PolicyFacts {
                prefix: policy.prefix.clone(),
                strategy,
                federated,
                label: policy.kind.label().to_string(),
            };
            (name.clone(), facts)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_prefix_strategy_and_federation() {
        let yaml = "version: 1\nlimiters:\n  a: { strategy: fixedWindow, limit: 5, period: 1s, prefix: p }\n  b:\n    strategy: fixedWindow\n    limit: 5\n    period: 1s\n    federated: { batch: 2 }\n  c:\n    distributedConcurrency: { minLimit: 1, maxLimit: 1 }\n";
        let facts = read("x.yaml", yaml).unwrap();
        assert_eq!(facts["a"].prefix, "p");
        assert!(facts["a"].strategy.is_some() && !facts["a"].federated);
        assert!(facts["b"].federated);
        assert_eq!(facts["b"].prefix, "b");
        assert_eq!(facts["c"].strategy, None);
        assert_eq!(facts["c"].label, "distributedConcurrency");
        let err = read("x.yaml", "version: 1\nlimiters:\n  a: { strategy: nope }\n").unwrap_err();
        assert!(err.to_string().contains("x.yaml"), "{err}");
    }
}
