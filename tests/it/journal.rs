//! Integration tests: journal.
