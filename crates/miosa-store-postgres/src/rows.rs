//! Helpers shared by the resource modules: IDs and pages.

use std::str::FromStr;

use miosa_core::{Page, PageRequest};
use miosa_store::StoreResult;
use sqlx::{Postgres, QueryBuilder};

use crate::error::corrupt;

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
pub(crate) fn push_page<'a>(q: &mut QueryBuilder<'a, Postgres>, page: &'a PageRequest) {
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
