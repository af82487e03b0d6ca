//! Column encodings shared by the resource modules: IDs, timestamps, pages.

use std::str::FromStr;

use miosa_core::{Page, PageRequest};
use miosa_store::{StoreError, StoreResult};
use sqlx::{QueryBuilder, Sqlite};
use time::OffsetDateTime;

use crate::error::corrupt;

/// A timestamp as stored: Unix microseconds. Callers truncate to
/// microseconds (`miosa_core::time_util::now`), so nothing is lost.
pub(crate) fn micros(t: OffsetDateTime) -> StoreResult<i64> {
    i64::try_from(t.unix_timestamp_nanos() / 1_000).map_err(|e| StoreError::Backend(Box::new(e)))
}

pub(crate) fn from_micros(table: &'static str, us: i64) -> StoreResult<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000)
        .map_err(|e| corrupt(table, format!("timestamp {us}: {e}")))
}

pub(crate) fn opt_from_micros(
    table: &'static str,
    us: Option<i64>,
) -> StoreResult<Option<OffsetDateTime>> {
    us.map(|us| from_micros(table, us)).transpose()
}

/// Parses a stored ID back into its type.
pub(crate) fn id<T: FromStr>(table: &'static str, s: &str) -> StoreResult<T>
where
    T::Err: std::fmt::Display,
{
    s.parse()
        .map_err(|e| corrupt(table, format!("id {s:?}: {e}")))
}

/// Appends the cursor condition, newest-first order and limit to a query
/// whose `WHERE` clause is open.
pub(crate) fn push_page<'a>(q: &mut QueryBuilder<'a, Sqlite>, page: &'a PageRequest) {
    if let Some(after) = &page.after {
        q.push(" AND id < ").push_bind(after.as_str());
    }
    q.push(" ORDER BY id DESC LIMIT ")
        .push_bind(page.fetch_limit());
}

/// Converts rows fetched with [`push_page`] into domain values and a page.
pub(crate) fn page_of<R, T>(
    rows: Vec<R>,
    page: &PageRequest,
    convert: fn(R) -> StoreResult<T>,
    id_of: fn(&T) -> String,
) -> StoreResult<Page<T>> {
    let items = rows
        .into_iter()
        .map(convert)
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(Page::from_rows(items, page, id_of))
}
