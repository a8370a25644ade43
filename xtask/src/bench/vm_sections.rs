//! The sections of docs/BENCHMARKS.md that `cargo xtask bench --kernel`
//! measured inside a VM, each between markers naming its kernel and mode,
//! so a later run (in a VM or on the host) replaces its own and keeps the
//! others.

const OPEN: &str = "<!-- vm-bench: ";
const CLOSE: &str = "<!-- /vm-bench -->";

/// Each marked section of `doc`, as `(key, whole block with its markers)`.
fn sections(doc: &str) -> Vec<(&str, &str)> {
    let mut found = Vec::new();
    let mut rest = doc;
    while let Some(start) = rest.find(OPEN) {
        let block = &rest[start..];
        let (Some(key_end), Some(end)) = (block.find(" -->"), block.find(CLOSE)) else {
            break;
        };
        found.push((&block[OPEN.len()..key_end], &block[..end + CLOSE.len()]));
        rest = &block[end + CLOSE.len()..];
    }
    found
}

/// Every marked section of `doc`, to go on the end of a new report.
pub fn kept(doc: &str) -> String {
    sections(doc)
        .into_iter()
        .map(|(_, block)| format!("\n{block}\n"))
        .collect()
}

/// `doc` with the section `key` set to `section`: in place where it was,
/// else at the end.
pub fn splice(doc: &str, key: &str, section: &str) -> String {
    let block = format!("{OPEN}{key} -->\n{}\n{CLOSE}", section.trim_end());
    match sections(doc).into_iter().find(|(k, _)| *k == key) {
        Some((_, old)) => doc.replacen(old, &block, 1),
        None => format!("{}\n\n{block}\n", doc.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_is_replaced_in_place_and_others_are_kept() {
        let doc = splice(
            "# Benchmarks\n\nhost rows\n",
            "debian-6.1 bpf-lsm",
            "## A\n\nold\n",
        );
        let doc = splice(&doc, "debian-6.1 ebpf-tracepoints", "## B\n\nrows\n");
        let doc = splice(&doc, "debian-6.1 bpf-lsm", "## A\n\nnew\n");
        assert!(doc.starts_with("# Benchmarks\n\nhost rows\n"), "{doc}");
        assert!(doc.contains("new") && !doc.contains("old"), "{doc}");
        let a = doc.find("## A").unwrap();
        assert!(
            a < doc.find("## B").unwrap(),
            "the first stays first: {doc}"
        );
        let kept = kept(&doc);
        assert_eq!(sections(&kept).len(), 2, "{kept}");
        assert!(!kept.contains("host rows"));
    }

    #[test]
    fn an_unclosed_marker_is_not_a_section() {
        assert!(kept("<!-- vm-bench: x -->\n## broken").is_empty());
    }
}
