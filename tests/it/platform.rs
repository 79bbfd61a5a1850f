//! Integration tests: platform.
