//! HTML rendering of tables and charts, for the report and for notebooks.

use plotly::Plot;
use polars::prelude::*;

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Renders a DataFrame as an HTML `<table>` with a header row; floats show 4 significant
/// decimals and nulls show as empty cells.
pub fn frame_to_html(df: &DataFrame) -> String {
    let mut html = String::from("<table class=\"infphys-table\">\n<thead><tr>");
    for name in df.get_column_names() {
        html.push_str(&format!("<th>{}</th>", escape_html(name)));
    }
    html.push_str("</tr></thead>\n<tbody>\n");

    for row in 0..df.height() {
        html.push_str("<tr>");
        for column in df.columns() {
            let cell = column
                .get(row)
                .map(|v| format_value(&v))
                .unwrap_or_default();
            html.push_str(&format!("<td>{}</td>", escape_html(&cell)));
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</tbody>\n</table>");
    html
}

fn format_value(value: &AnyValue<'_>) -> String {
    match value {
        AnyValue::Null => String::new(),
        AnyValue::Float64(v) => format_float(*v),
        AnyValue::Float32(v) => format_float(f64::from(*v)),
        AnyValue::String(s) => (*s).to_owned(),
        AnyValue::StringOwned(s) => s.to_string(),
        other => other.to_string(),
    }
}

fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v != 0.0 && v.abs() < 0.001 {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}")
    }
}

/// The plotly.js library (the version the `plotly` crate ships), for pages that work offline.
pub fn plotly_js() -> &'static str {
    static SCRIPT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| {
        // The crate's offline sources are plotly.js followed by MathJax, each in a script tag;
        // only plotly.js is needed.
        let sources = Plot::offline_js_sources();
        let start = sources.find('>').map_or(0, |i| i + 1);
        let end = sources[start..]
            .find("</script>")
            .map_or(sources.len(), |i| start + i);
        sources[start..end].to_owned()
    })
}

/// Renders a chart as a `<div>` and a script that draws it with the page's plotly.js.
pub fn chart_div(plot: &Plot, id: &str) -> String {
    format!(
        "<div id=\"{id}\" class=\"infphys-chart\" style=\"height:420px;width:100%\"></div>\n\
         <script type=\"text/javascript\">Plotly.newPlot(\"{id}\", {json});</script>\n",
        id = escape_html(id),
        json = script_safe_json(&plot.to_json()),
    )
}

/// Makes JSON safe inside a `<script>` element: `</script>` in a string would end it early.
pub(crate) fn script_safe_json(json: &str) -> String {
    json.replace("</", "<\\/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_header_and_escaped_cells() {
        let df =
            df!("name" => ["<b>"], "p95_s" => [Some(1.23456)], "err" => [None::<f64>]).unwrap();
        let html = frame_to_html(&df);
        assert!(
            html.contains("<th>name</th><th>p95_s</th><th>err</th>"),
            "{html}"
        );
        assert!(
            html.contains("<td>&lt;b&gt;</td><td>1.2346</td><td></td>"),
            "{html}"
        );
    }

    #[test]
    fn plotly_js_is_the_library_alone() {
        let js = plotly_js();
        assert!(js.contains("plotly.js v"), "not plotly.js");
        assert!(!js.contains("</script>"));
        let all = Plot::offline_js_sources();
        assert!(
            js.len() + 500_000 < all.len(),
            "MathJax was included: {} of {} bytes",
            js.len(),
            all.len()
        );
    }

    #[test]
    fn chart_json_cannot_close_the_script() {
        assert_eq!(
            script_safe_json(r#"{"t":"</script>"}"#),
            r#"{"t":"<\/script>"}"#
        );
    }
}
