//! The apiserver's PKI directory: the generation and loading live in `kwk-pki` (shared with
//! `kwk init`); re-exported here under the name the apiserver's callers use.

pub use kwk_pki::*;
