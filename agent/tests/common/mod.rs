//! The integration tests' helpers: the harness they share with
//! `cargo xtask bench` (`agent/test-support`), re-exported so each test's
//! `mod common; use common::*;` stays as it is.

#![allow(unused_imports)]

pub use test_support::*;
