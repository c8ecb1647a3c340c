//! AWS: ECR tokens through the SDK ([`ecr`]) and the token cache in front of it ([`token`]).

pub mod ecr;
pub mod token;
