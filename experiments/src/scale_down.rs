//! scale_down
