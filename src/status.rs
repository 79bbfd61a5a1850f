//! TODO: status
