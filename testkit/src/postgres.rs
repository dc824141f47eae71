//! Starts a throwaway PostgreSQL cluster (to be written).
