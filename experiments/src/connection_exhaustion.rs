//! connection_exhaustion
