//! Lease ids: opaque to clients, but they carry the policy and identity they hold a slot of, so
//! any server of a fleet can release or renew any lease without a shared index.
//!
//! Format: `<32 hex nonce>.<hex policy>.<hex identity>`.

use rand::RngCore;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseId {
    pub nonce: String,
    pub policy: String,
    pub key: String,
}

impl LeaseId {
    pub fn new(policy: &str, key: &str) -> Self {
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        LeaseId {
            nonce: hex::encode(bytes),
            policy: policy.to_owned(),
            key: key.to_owned(),
        }
    }

    pub fn encode(&self) -> String {
        format!(
            "{}.{}.{}",
            self.nonce,
            hex::encode(&self.policy),
            hex::encode(&self.key)
        )
    }

    /// `None` when the text is not a lease id this server could have issued.
    pub fn decode(text: &str) -> Option<LeaseId> {
        let mut parts = text.split('.');
        let (nonce, policy, key) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || nonce.len() != 32 || hex::decode(nonce).is_err() {
            return None;
        }
        let text_of = |h: &str| hex::decode(h).ok().and_then(|b| String::from_utf8(b).ok());
        Some(LeaseId {
            nonce: nonce.to_owned(),
            policy: text_of(policy)?,
            key: text_of(key)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_is_unique() {
        let a = LeaseId::new("cc", "user.1:x");
        let b = LeaseId::new("cc", "user.1:x");
        assert_ne!(a.encode(), b.encode());
        assert_eq!(LeaseId::decode(&a.encode()), Some(a));
        for bad in ["", "abc", "zz.00.00", &format!("{}.6363", "0".repeat(32))] {
            assert_eq!(LeaseId::decode(bad), None, "{bad}");
        }
    }
}
