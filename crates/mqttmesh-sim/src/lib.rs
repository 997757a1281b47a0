//! Virtual-time simulator (placeholder).
