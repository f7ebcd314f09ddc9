//! Structured outputs: the smallest JSON value a JSON schema accepts, so the mock can answer a
//! request that asks for JSON of a schema (chat `response_format`, Responses `text.format`,
//! Anthropic `output_config.format` or a forced tool) the way a model constrained to it would.

use serde_json::{json, Map, Value};

/// How deep a schema is followed (`$ref` cycles end here, as `null`).
const MAX_DEPTH: usize = 24;

/// The JSON schema a request asks its answer to follow, if any.
pub(crate) fn requested(req: &Value) -> Option<&Value> {
    let format = req
        .pointer("/response_format")
        .or_else(|| req.pointer("/text/format"))
        .or_else(|| req.pointer("/output_config/format"))
        .or_else(|| req.get("output_format"))?;
    match format.get("type")?.as_str()? {
        // chat nests the schema (`json_schema.schema`); Responses and Anthropic do not.
        "json_schema" => format
            .pointer("/json_schema/schema")
            .or_else(|| format.get("schema")),
        _ => None,
    }
}

/// The smallest value `schema` accepts: objects with their required properties (all of them
/// when none are listed), the first of an `enum`, `anyOf` or `oneOf`, `"mock"` for strings,
/// `1` for numbers, `true` for booleans, one item for arrays.
pub(crate) fn example(schema: &Value) -> Value {
    walk(schema, schema, 0)
}

fn walk(root: &Value, s: &Value, depth: usize) -> Value {
    if depth > MAX_DEPTH {
        return Value::Null;
    }
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        // `#/$defs/Name` or `#/definitions/Name`.
        let target = r
            .strip_prefix('#')
            .and_then(|p| root.pointer(p))
            .unwrap_or(&Value::Null);
        return walk(root, target, depth + 1);
    }
    if let Some(v) = s.get("const") {
        return v.clone();
    }
    if let Some(v) = s
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return v.clone();
    }
    for k in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = s.get(k).and_then(Value::as_array).and_then(|a| a.first()) {
            return walk(root, first, depth + 1);
        }
    }
    let kind = match s.get("type") {
        Some(Value::String(t)) => t.as_str(),
        // `["string", "null"]`: the first.
        Some(Value::Array(ts)) => ts.first().and_then(Value::as_str).unwrap_or("null"),
        _ if s.get("properties").is_some() => "object",
        _ => "null",
    };
    match kind {
        "object" => {
            let props = s.get("properties").and_then(Value::as_object);
            let required: Vec<&str> = match s.get("required").and_then(Value::as_array) {
                Some(r) => r.iter().filter_map(Value::as_str).collect(),
                None => props
                    .map(|p| p.keys().map(String::as_str).collect())
                    .unwrap_or_default(),
            };
            let mut out = Map::new();
            for name in required {
                let sub = props.and_then(|p| p.get(name)).unwrap_or(&Value::Null);
                out.insert(name.to_owned(), walk(root, sub, depth + 1));
            }
            Value::Object(out)
        }
        "array" => {
            let items = s.get("items").unwrap_or(&Value::Null);
            let n = s
                .get("minItems")
                .and_then(Value::as_u64)
                .unwrap_or(1)
                .clamp(1, 8);
            Value::Array((0..n).map(|_| walk(root, items, depth + 1)).collect())
        }
        "string" => json!("mock"),
        "integer" | "number" => json!(s.get("minimum").and_then(Value::as_i64).unwrap_or(1)),
        "boolean" => json!(true),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_follow_the_schema() {
        // The shape pydantic writes: `$defs`, `$ref`, optional fields as anyOf with null.
        let schema = json!({
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "temp": {"type": "integer", "minimum": -40},
                "sunny": {"type": "boolean"},
                "unit": {"enum": ["C", "F"]},
                "tags": {"type": "array", "items": {"type": "string"}},
                "where": {"$ref": "#/$defs/Place"},
                "note": {"anyOf": [{"type": "string"}, {"type": "null"}]}
            },
            "required": ["city", "temp", "sunny", "unit", "tags", "where", "note"],
            "$defs": {"Place": {"type": "object", "properties": {"lat": {"type": "number"}}}}
        });
        assert_eq!(
            example(&schema),
            json!({"city": "mock", "temp": -40, "sunny": true, "unit": "C", "tags": ["mock"],
                   "where": {"lat": 1}, "note": "mock"})
        );
    }

    #[test]
    fn a_ref_cycle_ends() {
        let schema = json!({"$ref": "#/$defs/N", "$defs": {"N": {"type": "object",
            "properties": {"next": {"$ref": "#/$defs/N"}}, "required": ["next"]}}});
        let v = example(&schema);
        assert!(v.to_string().len() < 2_000, "{v}");
    }

    #[test]
    fn formats_of_each_api_are_found() {
        let s = json!({"type": "object"});
        for req in [
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": s}}}),
            json!({"text": {"format": {"type": "json_schema", "name": "x", "schema": s}}}),
            json!({"output_config": {"format": {"type": "json_schema", "schema": s}}}),
            json!({"output_format": {"type": "json_schema", "schema": s}}),
        ] {
            assert_eq!(requested(&req), Some(&s), "{req}");
        }
        assert_eq!(
            requested(&json!({"response_format": {"type": "text"}})),
            None
        );
    }
}
