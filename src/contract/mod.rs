//! The vendored contract: golden vectors, the scripts manifest, the proto, and their checksums.

pub mod vectors;
