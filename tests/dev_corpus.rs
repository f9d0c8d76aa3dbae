//! The development corpus (used until the committed golden vectors exist) obeys the wall-clock
//! rule; set TK_DEV_VECTORS=PATH to also write it out for manual runs.
mod common;

#[test]
fn dev_corpus_obeys_the_wall_clock_rule() {
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
