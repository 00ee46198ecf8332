//! Topic templates (declared at `init`, rendered by the host) and batches without user
//! properties: layout, checks and rendering.

use tern_filter_abi::{
    AbiError, AnyDestination, Batch, BatchWriter, CheckedTemplate, Contents, Destination,
    RecordRef, RenderError, Spans, Template, TemplateError, TemplatePart, TemplateRoute, TopicSpan,
    VerdictWriter, Verdicts,
};

fn text(s: &str) -> TemplatePart {
    TemplatePart::Text(s.into())
}

fn checked(
    bridge: Option<&str>,
    parts: Vec<TemplatePart>,
) -> Result<CheckedTemplate, TemplateError> {
    CheckedTemplate::new(Template {
        bridge: bridge.map(Into::into),
        parts,
    })
}

fn encode(spans: &[(u16, u16)]) -> Vec<u8> {
    spans
        .iter()
        .flat_map(|&(s, e)| [s.to_le_bytes(), e.to_le_bytes()].concat())
        .collect()
}

fn render(t: &CheckedTemplate, topic: &str, spans: &[(u16, u16)]) -> Result<String, RenderError> {
    let bytes = encode(spans);
    t.render(0, topic, Spans::from_bytes(&bytes).expect("whole spans"))
}

#[test]
fn template_routes_have_the_documented_layout() {
    let spans = [TopicSpan { start: 8, end: 13 }];
    let mut w = VerdictWriter::new(Vec::new(), 1);
    w.route_any(
        0,
        [AnyDestination::Template(TemplateRoute {
            template: 3,
            spans: &spans,
        })],
    )
    .expect("writable");
    let buf = w.finish();
    #[rustfmt::skip]
    let expected = [
        1, 1, 1, 0, 0, 0, 0x01, 1, 0, 0, 0,  // form 1, count 1, bitmap, 1 edit
        0, 0, 0, 0, 2, 1, 0,                  // message 0: routes, 1 destination
        2, 3, 0, 1, 8, 0, 13, 0,              // template 3, 1 span: 8..13
    ];
    assert_eq!(buf, expected);
    let verdicts = Verdicts::parse(&buf, 1).expect("valid");
    let edit = verdicts.edits().next().expect("one edit");
    let routes: Vec<_> = edit.routes.expect("routes").collect();
    let [Destination::Template { template, spans }] = routes[..] else {
        panic!("not a template route: {routes:?}");
    };
    assert_eq!(template, 3);
    assert_eq!(
        spans.iter().collect::<Vec<_>>(),
        [TopicSpan { start: 8, end: 13 }]
    );
    // The lazy reader agrees.
    let lazy = Verdicts::parse_lazy(&buf, 1).expect("valid");
    let lazy_routes: Vec<_> = lazy
        .edits()
        .next()
        .and_then(|e| e.routes)
        .expect("routes")
        .collect::<Result<_, _>>()
        .expect("checked");
    assert_eq!(lazy_routes, routes);
}

#[test]
fn truncated_template_routes_are_refused() {
    let spans = [
        TopicSpan { start: 0, end: 1 },
        TopicSpan { start: 2, end: 3 },
    ];
    let mut w = VerdictWriter::new(Vec::new(), 1);
    w.route_any(
        0,
        [AnyDestination::Template(TemplateRoute {
            template: 0,
            spans: &spans,
        })],
    )
    .expect("writable");
    let buf = w.finish();
    for cut in 1..=8 {
        let short = &buf[..buf.len() - cut];
        assert!(Verdicts::parse(short, 1).is_err(), "cut {cut} accepted");
        assert!(
            Verdicts::parse_lazy(short, 1).is_err(),
            "cut {cut} accepted lazily"
        );
    }
}

#[test]
fn more_than_255_spans_cannot_be_written() {
    let spans = vec![TopicSpan::default(); 256];
    let mut w = VerdictWriter::new(Vec::new(), 1);
    let err = w
        .route_any(
            0,
            [AnyDestination::Template(TemplateRoute {
                template: 0,
                spans: &spans,
            })],
        )
        .expect_err("too many spans");
    assert!(matches!(err, AbiError::TooMany { count: 256, .. }), "{err}");
    assert_eq!(w.finish(), [1, 0], "the failed route left nothing behind");
}

#[test]
fn templates_render_text_and_spans() {
    // sensors/{0}/temp -> site-7/{0}/temperature
    let t = checked(
        Some("cloud"),
        vec![text("site-7/"), TemplatePart::Span(0), text("/temperature")],
    )
    .expect("valid");
    assert_eq!(t.bridge(), Some("cloud"));
    assert_eq!(t.span_count(), 1);
    assert_eq!(
        render(&t, "sensors/dev-1/temp", &[(8, 13)]).as_deref(),
        Ok("site-7/dev-1/temperature")
    );
    // Spans may repeat, come in any order and be empty.
    let t = checked(
        None,
        vec![
            TemplatePart::Span(1),
            text("/"),
            TemplatePart::Span(0),
            text("/"),
            TemplatePart::Span(1),
        ],
    )
    .expect("valid");
    assert_eq!(
        render(&t, "a/bc", &[(0, 1), (2, 4)]).as_deref(),
        Ok("bc/a/bc")
    );
    assert_eq!(render(&t, "a/bc", &[(0, 0), (2, 2)]).as_deref(), Ok("//"));
    // Multi-byte characters are copied whole.
    let t = checked(None, vec![text("x/"), TemplatePart::Span(0)]).expect("valid");
    assert_eq!(render(&t, "é/ü", &[(0, 5)]).as_deref(), Ok("x/é/ü"));
}

#[test]
fn bad_spans_are_render_errors() {
    let t = checked(None, vec![text("x/"), TemplatePart::Span(0)]).expect("valid");
    let topic = "é/a";
    assert!(matches!(
        render(&t, topic, &[]),
        Err(RenderError::SpanCount {
            expected: 1,
            found: 0,
            ..
        })
    ));
    assert!(matches!(
        render(&t, topic, &[(0, 1), (0, 1)]),
        Err(RenderError::SpanCount { found: 2, .. })
    ));
    for span in [(0, 1), (1, 2), (3, 5), (2, 1), (0, 9)] {
        assert!(
            matches!(render(&t, topic, &[span]), Err(RenderError::BadSpan { .. })),
            "{span:?}"
        );
    }
    assert_eq!(render(&t, topic, &[(0, 2)]).as_deref(), Ok("x/é"));
    // A span the template does not use is checked all the same.
    let second = checked(None, vec![text("x/"), TemplatePart::Span(1)]).expect("valid");
    assert_eq!(second.span_count(), 2);
    assert!(matches!(
        render(&second, topic, &[(0, 1), (3, 4)]),
        Err(RenderError::BadSpan {
            start: 0,
            end: 1,
            ..
        })
    ));
    assert_eq!(
        render(&second, topic, &[(0, 2), (3, 4)]).as_deref(),
        Ok("x/a")
    );
}

#[test]
fn rendered_topics_are_valid_topic_names() {
    // Only spans: empty result, and a `$` topic made from a span, are refused for local
    // destinations; upstream topics may start with `$` (the upstream broker decides).
    let spans_only = checked(None, vec![TemplatePart::Span(0)]).expect("valid");
    assert_eq!(render(&spans_only, "a", &[(0, 0)]), Err(RenderError::Empty));
    assert_eq!(
        render(&spans_only, "$SYS/x", &[(0, 6)]),
        Err(RenderError::DollarPrefix)
    );
    let upstream = checked(Some("cloud"), vec![TemplatePart::Span(0)]).expect("valid");
    assert_eq!(
        render(&upstream, "$SYS/x", &[(0, 6)]).as_deref(),
        Ok("$SYS/x")
    );
    // Too long: text plus spans past 65,535 bytes.
    let long = "a".repeat(65_000);
    let t = checked(
        None,
        vec![text(&long), TemplatePart::Span(0), TemplatePart::Span(0)],
    )
    .expect("text alone fits");
    let topic = "b".repeat(400);
    assert_eq!(
        render(&t, &topic, &[(0, 400)]),
        Err(RenderError::TooLong { len: 65_800 })
    );
}

#[test]
fn invalid_templates_are_refused_at_declaration() {
    assert_eq!(checked(None, vec![]), Err(TemplateError::NoParts));
    assert_eq!(
        checked(Some(""), vec![text("a")]),
        Err(TemplateError::EmptyBridge)
    );
    for bad in ["a/+", "#", "a\0b"] {
        assert!(
            matches!(
                checked(None, vec![text(bad)]),
                Err(TemplateError::ForbiddenChar { .. })
            ),
            "{bad:?}"
        );
    }
    assert_eq!(
        checked(None, vec![text("$SYS/"), TemplatePart::Span(0)]),
        Err(TemplateError::DollarPrefix)
    );
    assert!(checked(Some("cloud"), vec![text("$aws/things")]).is_ok());
    assert_eq!(
        checked(None, vec![text(&"a".repeat(65_536))]),
        Err(TemplateError::TooLong { len: 65_536 })
    );
    let t = Template {
        bridge: Some("cloud".into()),
        parts: vec![text("up/"), TemplatePart::Span(2)],
    };
    assert_eq!(t.to_string(), "bridge:cloud up/{2}");
    assert_eq!(CheckedTemplate::new(t).map(|t| t.span_count()), Ok(3));
}

fn rec(topic: &str) -> RecordRef<'_> {
    RecordRef {
        topic,
        client_id: "c",
        qos: 1,
        retain: false,
        received_ms: 7,
        content_type: None,
        payload: Some(b"p"),
    }
}

#[test]
fn batches_without_properties_carry_none_and_say_so() {
    let contents = Contents {
        payloads: false,
        properties: false,
    };
    let mut w = BatchWriter::with_contents(Vec::new(), contents);
    w.push(&rec("a/b"), [("k", "v")].into_iter()).expect("fits");
    let buf = w.finish();
    assert_eq!(buf[1], 0b10, "batch flags: properties omitted, no payloads");
    let batch = Batch::parse(&buf).expect("valid");
    assert_eq!(batch.contents(), contents);
    let mut records = batch.records();
    let record = records.next_quick().expect("quick reader takes it");
    assert_eq!(record.property_count(), 0);
    assert_eq!(record.topic(), Ok("a/b"));
    assert!(records.next().is_none());

    // The same record with its property, under a header that says properties are omitted.
    let mut w = BatchWriter::new(Vec::new(), false);
    w.push(&rec("a/b"), [("k", "v")].into_iter()).expect("fits");
    let mut buf = w.finish();
    buf[1] |= 0b10;
    let batch = Batch::parse(&buf).expect("header valid");
    let mut records = batch.records();
    assert!(records.next_quick().is_none(), "the quick reader gives up");
    assert_eq!(
        records.next().map(|r| r.map(|_| ())),
        Some(Err(AbiError::PropertiesOmitted { index: 0 }))
    );
    assert!(batch.iter().next().is_some_and(|r| r.is_err()));
    // Bits past the two defined ones stay reserved.
    buf[1] = 0b100;
    assert!(Batch::parse(&buf).is_err());
}

mod model {
    //! Rendering agrees with a naive model for arbitrary templates, topics and spans (one-span
    //! templates take their own path; the model does not care).

    use proptest::prelude::*;
    use tern_filter_abi::{CheckedTemplate, Spans, Template, TemplatePart};

    /// What rendering should give: `None` where it must fail.
    fn naive(
        parts: &[TemplatePart],
        local: bool,
        topic: &str,
        spans: &[(u16, u16)],
    ) -> Option<String> {
        let needed = parts
            .iter()
            .filter_map(|p| match p {
                TemplatePart::Span(n) => Some(usize::from(*n) + 1),
                TemplatePart::Text(_) => None,
            })
            .max()
            .unwrap_or(0);
        if spans.len() != needed {
            return None;
        }
        let texts: Vec<&str> = spans
            .iter()
            .map(|&(s, e)| topic.get(usize::from(s)..usize::from(e)))
            .collect::<Option<_>>()?;
        let out: String = parts
            .iter()
            .map(|p| match p {
                TemplatePart::Text(t) => t.as_str(),
                TemplatePart::Span(n) => texts[usize::from(*n)],
            })
            .collect();
        let leading_span = matches!(parts.first(), Some(TemplatePart::Span(_)));
        let ok = !out.is_empty()
            && out.len() <= 65_535
            && !(local && leading_span && out.starts_with('$'));
        ok.then_some(out)
    }

    fn part() -> impl Strategy<Value = TemplatePart> {
        prop_oneof![
            "[a-z/é]{0,4}".prop_map(TemplatePart::Text),
            (0u8..3).prop_map(TemplatePart::Span),
        ]
    }

    proptest! {
        #[test]
        fn render_agrees_with_the_model(
            parts in proptest::collection::vec(part(), 1..5),
            local in any::<bool>(),
            topic in "[a-z/$é]{0,10}",
            spans in proptest::collection::vec((0u16..14, 0u16..14), 0..4),
        ) {
            let declared = Template {
                bridge: (!local).then(|| "cloud".to_owned()),
                parts: parts.clone(),
            };
            let Ok(template) = CheckedTemplate::new(declared) else {
                return Ok(());
            };
            let bytes: Vec<u8> = spans
                .iter()
                .flat_map(|&(s, e)| [s.to_le_bytes(), e.to_le_bytes()].concat())
                .collect();
            let got = template
                .render(0, &topic, Spans::from_bytes(&bytes).expect("whole spans"))
                .ok();
            prop_assert_eq!(got, naive(&parts, local, &topic, &spans));
        }
    }
}
