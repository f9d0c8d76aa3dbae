//! Writes the development corpus to a path given in TK_DEV_VECTORS (a manual helper, not a check).
mod common;

#[test]
fn dump_dev_corpus_when_asked() {
    if let Some(path) = std::env::var_os("TK_DEV_VECTORS") {
        std::fs::write(
            path,
            serde_json::to_vec_pretty(&common::dev_vectors()).unwrap(),
        )
        .unwrap();
    }
    // Building it also checks every dev timeline against the wall-clock rule.
    assert!(common::dev_vectors().suites.len() >= 16);
}
