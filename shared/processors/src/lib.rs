//! gnmic's event processors (work in progress).
