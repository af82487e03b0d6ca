//! Cursor pagination shared by every list.
//!
//! Lists are newest first. The cursor is the ID of the last item returned;
//! the next page holds items with smaller IDs. Because IDs are time-ordered
//! and unique, pages never repeat or skip an item that existed at the time.

use crate::FieldError;

/// Default and maximum page sizes.
pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;
const MAX_CURSOR_LEN: usize = 64;

/// Which page to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: u32,
    /// Return items strictly older than (ID less than) this.
    pub after: Option<String>,
}

impl Default for PageRequest {
    fn default() -> Self {
        Self {
            limit: DEFAULT_LIMIT,
            after: None,
        }
    }
}

impl PageRequest {
    /// Validates raw `limit` and `cursor` query values.
    pub fn parse(limit: Option<i64>, cursor: Option<String>) -> Result<Self, FieldError> {
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(l) if (1..=i64::from(MAX_LIMIT)).contains(&l) => l as u32,
            Some(_) => {
                return Err(FieldError::new(
                    "limit",
                    format!("must be between 1 and {MAX_LIMIT}"),
                ))
            }
        };
        let after = match cursor {
            None => None,
            Some(c) if c.is_empty() => None,
            Some(c)
                if c.len() <= MAX_CURSOR_LEN
                    && c.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') =>
            {
                Some(c)
            }
            Some(_) => {
                return Err(FieldError::new(
                    "cursor",
                    "is not a cursor returned by this API",
                ))
            }
        };
        Ok(Self { limit, after })
    }

    /// How many rows a store should fetch: one more than the limit, to know
    /// whether another page exists.
    pub fn fetch_limit(&self) -> i64 {
        i64::from(self.limit) + 1
    }
}

/// One page of results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows fetched newest first.
    pub fn from_rows(mut rows: Vec<T>, req: &PageRequest, id_of: impl Fn(&T) -> String) -> Self {
        let more = rows.len() > req.limit as usize;
        rows.truncate(req.limit as usize);
        let next_cursor = if more { rows.last().map(id_of) } else { None };
        Self {
            items: rows,
            next_cursor,
        }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_bounds() {
        assert_eq!(PageRequest::parse(None, None).unwrap().limit, 50);
        assert_eq!(PageRequest::parse(Some(500), None).unwrap().limit, 500);
        assert_eq!(
            PageRequest::parse(Some(0), None).unwrap_err().field,
            "limit"
        );
        assert_eq!(
            PageRequest::parse(Some(501), None).unwrap_err().field,
            "limit"
        );
        assert_eq!(
            PageRequest::parse(Some(-1), None).unwrap_err().field,
            "limit"
        );
    }

    #[test]
    fn cursor_charset() {
        let ok = PageRequest::parse(None, Some("ws_01jdq3x5m8v2k7f4c9n6r1w0ab".into())).unwrap();
        assert!(ok.after.is_some());
        assert_eq!(
            PageRequest::parse(None, Some("x' OR 1=1".into()))
                .unwrap_err()
                .field,
            "cursor"
        );
    }

    #[test]
    fn from_rows_sets_cursor_only_when_more() {
        let req = PageRequest {
            limit: 2,
            after: None,
        };
        let p = Page::from_rows(vec![3, 2, 1], &req, |x| x.to_string());
        assert_eq!(p.items, vec![3, 2]);
        assert_eq!(p.next_cursor.as_deref(), Some("2"));
        let p = Page::from_rows(vec![3, 2], &req, |x| x.to_string());
        assert_eq!(p.next_cursor, None);
    }
}
