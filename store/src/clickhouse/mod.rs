//! ClickHouse event backend (to be written).
