//! How the ids are stored in the journal's columns: as their text, checked again when read.
//!
//! Only the conversions live here (the orphan rule puts a foreign trait's impls for these
//! types in this crate); every SQL statement stays in the library's `journal`.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use crate::{FileId, ProjectId};

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
