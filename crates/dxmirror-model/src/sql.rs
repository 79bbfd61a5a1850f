//! How the ids and the platform's stated values are stored in the journal's columns: as their
//! text. Ids are checked again when read; an archival state, `md5` or `checksumType` is the
//! platform's text verbatim and is parsed again when read, exactly as when it was listed.
//!
//! Only the conversions live here (the orphan rule puts a foreign trait's impls for these
//! types in this crate); every SQL statement stays in the library's `journal`.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use crate::{ArchivalState, ChecksumType, Digest, FileId, ProjectId, Stated};

macro_rules! id_sql {
    ($name:ident) => {
        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                value
                    .as_str()?
                    .parse()
                    .map_err(|e| FromSqlError::Other(Box::new(e)))
            }
        }
    };
}
id_sql!(ProjectId);
id_sql!(FileId);

impl ToSql for ArchivalState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for ArchivalState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        Ok(ArchivalState::parse(value.as_str()?))
    }
}

impl<T> ToSql for Stated<T> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.raw()))
    }
}

impl FromSql for Stated<Digest> {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        Ok(Stated::md5(value.as_str()?))
    }
}

impl FromSql for Stated<ChecksumType> {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        Ok(Stated::checksum_type(value.as_str()?))
    }
}
