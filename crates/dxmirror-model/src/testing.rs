//! Test factories for the domain types (ids, `RemoteFile`s), behind the `test-support` feature,
//! so that the library's unit tests and the integration tests build them in one way.
//! Only test builds enable it (through dev-dependencies); release binaries carry none of it.
