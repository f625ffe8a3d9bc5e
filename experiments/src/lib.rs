pub mod pod_kill; pub mod scale_down; pub mod connection_exhaustion;
