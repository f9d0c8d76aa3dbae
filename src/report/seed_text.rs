//! Seeds in JSON as decimal text: a `u64` above 2^53 does not survive a JSON number in jq or
//! JavaScript (both read numbers as doubles), and a seed that reads back wrong reproduces nothing.
//! Reading also accepts a plain number, for files written before.

use serde::{Deserialize, Deserializer, Serializer};

pub fn serialize<S: Serializer>(seed: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&seed.to_string())
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Text(String),
        Number(u64),
    }
    match Either::deserialize(deserializer)? {
        Either::Number(n) => Ok(n),
        Either::Text(t) => t
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("seed {t:?} is not a u64"))),
    }
}

#[cfg(test)]
mod tests {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct S {
        #[serde(with = "super")]
        seed: u64,
    }

    #[test]
    fn a_seed_above_2_pow_53_reads_back_exactly_as_text() {
        let seed = u64::MAX - 1;
        let json = serde_json::to_string(&S { seed }).unwrap();
        assert_eq!(json, format!("{{\"seed\":\"{seed}\"}}"));
        // What a double-based reader (jq, JavaScript) gets from it: the exact digits.
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["seed"].as_str().unwrap().parse::<u64>().unwrap(), seed);
        assert_eq!(serde_json::from_str::<S>(&json).unwrap().seed, seed);
        assert_eq!(serde_json::from_str::<S>("{\"seed\":7}").unwrap().seed, 7);
        assert!(serde_json::from_str::<S>("{\"seed\":\"x\"}").is_err());
    }
}
