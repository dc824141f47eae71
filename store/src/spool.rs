//! Durable local spool (to be written).
