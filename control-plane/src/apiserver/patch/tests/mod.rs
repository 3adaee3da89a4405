//! Tests of the patch engines and their schema metadata.

mod builtin_tests;
