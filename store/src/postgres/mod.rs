//! PostgreSQL entity backend (to be written).
