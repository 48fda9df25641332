//! Just enough XML surgery for the proxy's rewrites of moto's answers:
//! find the top-level `<item>`/`<member>` elements of a list and edit them.
//! moto's XML is regular (no CDATA, no attributes on these elements).

use std::ops::Range;

/// Byte ranges of the top-level `<tag>…</tag>` elements directly inside each
/// `<list>…</list>` of `xml`.
pub fn elements(xml: &str, list: &str, tag: &str) -> Vec<Range<usize>> {
    let open_list = format!("<{list}>");
    let close_list = format!("</{list}>");
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(start) = xml[from..]
        .find(&open_list)
        .map(|i| i + from + open_list.len())
    {
        let mut depth = 0usize;
        let mut pos = start;
        let mut item_start = 0;
        // Found once per list and looked up again only once passed: a list
        // of a thousand items would otherwise scan to its end for each one.
        let mut list_end = xml[start..].find(&close_list).map(|i| i + start);
        loop {
            let find = |pat: &str| xml[pos..].find(pat).map(|i| i + pos);
            if list_end.is_some_and(|end| end < pos) {
                list_end = find(&close_list);
            }
            let candidates = [(find(&open), 0), (find(&close), 1), (list_end, 2)];
            let Some((at, kind)) = candidates
                .iter()
                .filter_map(|(at, kind)| at.map(|a| (a, *kind)))
                .min()
            else {
                break;
            };
            match kind {
                0 => {
                    if depth == 0 {
                        item_start = at;
                    }
                    depth += 1;
                    pos = at + open.len();
                }
                1 if depth > 0 => {
                    depth -= 1;
                    pos = at + close.len();
                    if depth == 0 {
                        out.push(item_start..pos);
                    }
                }
                2 if depth > 0 => pos = at + close_list.len(),
                _ => {
                    pos = at;
                    break;
                }
            }
        }
        from = pos.max(start);
    }
    out
}

/// The text of the first `<tag>text</tag>` in `xml`.
pub fn text<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(&xml[start..end])
}

/// Replaces the text of the first `<tag>…</tag>` in `xml`.
pub fn replace_text(xml: &str, tag: &str, value: &str) -> String {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    match (xml.find(&open), xml.find(&close)) {
        (Some(s), Some(e)) if s < e => {
            format!("{}{open}{value}{}", &xml[..s], &xml[e..])
        }
        _ => xml.to_string(),
    }
}

/// Inserts `insert` right after the first `</tag>` in `xml`.
pub fn insert_after(xml: &str, tag: &str, insert: &str) -> String {
    let close = format!("</{tag}>");
    match xml.find(&close) {
        Some(i) => {
            let at = i + close.len();
            format!("{}{insert}{}", &xml[..at], &xml[at..])
        }
        None => xml.to_string(),
    }
}

/// Applies `edit` to every element found by [`elements`].
pub fn edit_elements(
    xml: &str,
    list: &str,
    tag: &str,
    mut edit: impl FnMut(&str) -> Option<String>,
) -> String {
    let mut out = xml.to_string();
    for range in elements(xml, list, tag).into_iter().rev() {
        if let Some(new) = edit(&xml[range.clone()]) {
            out.replace_range(range, &new);
        }
    }
    out
}

/// Escapes text for an XML element.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_top_level_elements_only() {
        let xml = "<r><Instances><member><Id>a</Id><X><member>n</member></X></member><member><Id>b</Id></member></Instances><Tags><member>t</member></Tags></r>";
        let found: Vec<&str> = elements(xml, "Instances", "member")
            .into_iter()
            .map(|r| &xml[r])
            .collect();
        assert_eq!(
            found,
            vec![
                "<member><Id>a</Id><X><member>n</member></X></member>",
                "<member><Id>b</Id></member>"
            ]
        );
        let edited = edit_elements(xml, "Instances", "member", |m| {
            (text(m, "Id") == Some("b")).then(|| replace_text(m, "Id", "B"))
        });
        assert!(edited.contains("<Id>B</Id>") && edited.contains("<Id>a</Id>"));
        assert_eq!(
            insert_after("<a><b>1</b></a>", "b", "<c/>"),
            "<a><b>1</b><c/></a>"
        );
    }
}
