//! pod_kill
