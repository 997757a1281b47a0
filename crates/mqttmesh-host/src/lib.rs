//! Host runtime (placeholder).
