//! The older APIs served on the same pipeline: `/v1/conversation` (seed 002) and the
//! stage-coded `/chat` (seed 004). Domain helpers only; the handlers are in `http/`.

pub mod stage_tag;

use std::collections::BTreeMap;

use crate::config::StageConfig;

/// The stage API's default remap table (seed 004).
pub fn default_remap() -> BTreeMap<String, String> {
    [("3001", "1002"), ("3002", "1002"), ("1002", "1002"), ("2006", "2004"), ("2017", "2016"), ("2020", "0002")]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// The stage API's default stage names (seed 004).
pub fn default_names() -> BTreeMap<String, String> {
    [
        ("0000", "结束通话"),
        ("0001", "转接人工"),
        ("0002", "语义无法识别转接人工"),
        ("0003", "有人伤转接人工"),
        ("1001", "未准备好通话"),
        ("1002", "通话中"),
        ("2000", "进入单车拍照"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect()
}

/// The effective tables: configured ones replace the defaults.
pub fn tables(cfg: &StageConfig) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    (cfg.remap.clone().unwrap_or_else(default_remap), cfg.names.clone().unwrap_or_else(default_names))
}

/// A serde_json formatter that writes JSON the way Python's `json.dumps` does by default:
/// `", "` between items and `": "` after keys, on one line.
pub struct PythonJson;

impl serde_json::ser::Formatter for PythonJson {
    fn begin_array_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

/// Replaces `{{key}}` placeholders with session variables; unknown ones become empty.
pub fn fill_placeholders(template: &str, vars: &[(String, String)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        match rest[i + 2..].find("}}") {
            Some(j) => {
                let key = rest[i + 2..i + 2 + j].trim();
                if let Some((_, v)) = vars.iter().find(|(k, _)| k == key) {
                    out.push_str(v);
                }
                rest = &rest[i + 2 + j + 2..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_style_json() {
        let v = serde_json::json!({"a": [1, "通话中", {"b": null}], "c": "x\n"});
        let mut out = Vec::new();
        serde::Serialize::serialize(&v, &mut serde_json::Serializer::with_formatter(&mut out, PythonJson)).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), r#"{"a": [1, "通话中", {"b": null}], "c": "x\n"}"#);
    }

    #[test]
    fn default_remap_is_the_seeds() {
        let r = default_remap();
        for (from, to) in
            [("3001", "1002"), ("3002", "1002"), ("1002", "1002"), ("2006", "2004"), ("2017", "2016"), ("2020", "0002")]
        {
            assert_eq!(r.get(from).map(String::as_str), Some(to), "{from}");
        }
        assert_eq!(r.len(), 6);
        assert_eq!(default_names().get("0000").map(String::as_str), Some("结束通话"));
    }

    #[test]
    fn placeholders() {
        let vars = vec![("hphm1".to_string(), "沪A8939".to_string())];
        assert_eq!(fill_placeholders("Plate: {{hphm1}}, other: {{ nope }}.", &vars), "Plate: 沪A8939, other: .");
        assert_eq!(fill_placeholders("broken {{ tail", &vars), "broken {{ tail");
    }
}
