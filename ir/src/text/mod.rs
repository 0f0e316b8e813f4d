//! `.kir` text format (to be written).
