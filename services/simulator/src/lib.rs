//! gnomon simulator service.
