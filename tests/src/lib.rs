//! Cross-service integration tests live in `tests/`; see `tests/tests/*.rs`.
