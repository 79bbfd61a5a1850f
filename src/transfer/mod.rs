//! TODO: transfer
