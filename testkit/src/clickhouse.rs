//! Starts a throwaway ClickHouse server (to be written).
