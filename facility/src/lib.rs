//! facility
