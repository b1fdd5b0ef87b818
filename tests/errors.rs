//! Every error: the right variant with the right numbers, a Display message that
//! names them, and the output buffer left exactly as it was (compared bitwise
//! against a sentinel fill).

use crate::common;

use common::inputs::untouched;
use softmax::{Error, Isa, Rows, RowsMut, Softmax};

fn sentinels(n: usize) -> Vec<f32> {
    common::inputs::sentinels(n)
}

/// The Display text is non-empty and mentions every number in `numbers`.
fn assert_message(e: &Error, numbers: &[&str]) {
    let text = e.to_string();
    assert!(!text.is_empty(), "{e:?}: empty message");
    for n in numbers {
        assert!(
            text.contains(n),
            "{e:?}: message {text:?} does not mention {n}"
        );
    }
    let _: &dyn std::error::Error = e;
}

#[test]
fn length_mismatch() {
    let x = [1.0f32, 2.0, 3.0];
    common::for_each_isa("length_mismatch", |isa| {
        let sm = Softmax::new().with_isa(isa).unwrap();
        for out_len in [0, 2, 4] {
            let mut y = sentinels(out_len);
            let calls: [(&str, Result<(), Error>); 2] = [
                ("softmax", sm.softmax(&x, &mut y)),
                ("log_softmax", sm.log_softmax(&x, &mut y)),
            ];
            for (op, result) in calls {
                let e = result.expect_err(op);
                assert!(
                    matches!(e, Error::LengthMismatch { input: 3, output } if output == out_len),
                    "[isa {isa} | op {op}] 3 → {out_len}: {e:?}"
                );
                assert_message(&e, &["3", &out_len.to_string()]);
            }
            assert!(
                untouched(&y),
                "[isa {isa}] 3 → {out_len}: the output was written: {y:?}"
            );
        }
    });
    // The free functions (default options) check the same.
    let mut y = sentinels(2);
    type FreeFn = fn(&[f32], &mut [f32]) -> Result<(), Error>;
    let calls: [(&str, FreeFn); 2] = [
        ("softmax", softmax::softmax),
        ("log_softmax", softmax::log_softmax),
    ];
    for (op, call) in calls {
        let e = call(&x, &mut y).unwrap_err();
        assert!(
            matches!(
                e,
                Error::LengthMismatch {
                    input: 3,
                    output: 2
                }
            ),
            "[free fn {op}] {e:?}"
        );
    }
    assert!(untouched(&y), "free functions wrote the output: {y:?}");
}

#[test]
fn shape_mismatch() {
    let x = vec![0.5f32; 12];
    common::for_each_isa("shape_mismatch", |isa| {
        let sm = Softmax::new().with_isa(isa).unwrap();
        // (rows, cols) of the output against an input of 3 × 4.
        for (rows, cols) in [(4, 3), (2, 4), (3, 5), (3, 3)] {
            let mut y = sentinels(rows * cols);
            let input = Rows::contiguous(&x, 4).unwrap();
            let e = sm
                .softmax_rows(input, RowsMut::contiguous(&mut y, cols).unwrap())
                .unwrap_err();
            assert!(
                matches!(e, Error::ShapeMismatch { input: (3, 4), output } if output == (rows, cols)),
                "[isa {isa} | op softmax_rows] 3×4 → {rows}×{cols}: {e:?}"
            );
            assert_message(&e, &["3", "4", &rows.to_string(), &cols.to_string()]);
            let e = sm
                .log_softmax_rows(input, RowsMut::contiguous(&mut y, cols).unwrap())
                .unwrap_err();
            assert!(
                matches!(e, Error::ShapeMismatch { input: (3, 4), output } if output == (rows, cols)),
                "[isa {isa} | op log_softmax_rows] 3×4 → {rows}×{cols}: {e:?}"
            );
            assert!(
                untouched(&y),
                "[isa {isa}] 3×4 → {rows}×{cols}: the output was written"
            );
        }
    });
}

#[test]
fn stride_too_small() {
    let mut data = sentinels(20);
    let e = Rows::new(&data, 2, 5, 4).unwrap_err();
    assert!(
        matches!(e, Error::StrideTooSmall { stride: 4, cols: 5 }),
        "{e:?}"
    );
    assert_message(&e, &["4", "5"]);
    let e = RowsMut::new(&mut data, 1, 5, 0).unwrap_err();
    assert!(
        matches!(e, Error::StrideTooSmall { stride: 0, cols: 5 }),
        "{e:?}"
    );
    assert!(untouched(&data));
}

#[test]
fn buffer_too_short() {
    // 3 rows of 4 at stride 6 need (3 − 1) · 6 + 4 = 16 elements.
    let mut data = sentinels(15);
    let e = Rows::new(&data, 3, 4, 6).unwrap_err();
    assert!(
        matches!(
            e,
            Error::BufferTooShort {
                len: 15,
                required: 16,
                rows: 3,
                cols: 4,
                stride: 6
            }
        ),
        "{e:?}"
    );
    assert_message(&e, &["15", "16", "3", "4", "6"]);
    let e = RowsMut::new(&mut data, 3, 4, 6).unwrap_err();
    assert!(
        matches!(e, Error::BufferTooShort { required: 16, .. }),
        "{e:?}"
    );
    assert!(untouched(&data));
    // The last row needs no padding: exactly 16 is enough.
    let mut exact = sentinels(16);
    assert!(RowsMut::new(&mut exact, 3, 4, 6).is_ok());
}

#[test]
fn shape_overflow() {
    let mut data = sentinels(4);
    let e = Rows::new(&data, usize::MAX, 1, 2).unwrap_err();
    assert!(
        matches!(
            e,
            Error::ShapeOverflow {
                rows: usize::MAX,
                stride: 2
            }
        ),
        "{e:?}"
    );
    assert_message(&e, &[&usize::MAX.to_string(), "2"]);
    let e = RowsMut::new(&mut data, 2, usize::MAX, usize::MAX).unwrap_err();
    assert!(
        matches!(
            e,
            Error::ShapeOverflow {
                rows: 2,
                stride: usize::MAX
            }
        ),
        "{e:?}"
    );
    assert!(untouched(&data));
}

#[test]
fn length_not_multiple() {
    let mut data = sentinels(10);
    let e = Rows::contiguous(&data, 3).unwrap_err();
    assert!(
        matches!(e, Error::LengthNotMultiple { len: 10, cols: 3 }),
        "{e:?}"
    );
    assert_message(&e, &["10", "3"]);
    let e = RowsMut::contiguous(&mut data, 0).unwrap_err();
    assert!(
        matches!(e, Error::LengthNotMultiple { len: 10, cols: 0 }),
        "{e:?}"
    );
    assert!(untouched(&data));
    // An empty buffer of zero-length rows is a valid, empty batch.
    assert_eq!(Rows::<f32>::contiguous(&[], 0).unwrap().rows(), 0);
}

#[test]
fn output_too_short() {
    let x = vec![0.25f32; 12];
    common::for_each_isa("output_too_short", |isa| {
        let sm = Softmax::new().with_isa(isa).unwrap();
        let mut out = sentinels(2);
        let e = sm
            .logsumexp_rows(Rows::contiguous(&x, 4).unwrap(), &mut out)
            .unwrap_err();
        assert!(
            matches!(e, Error::OutputTooShort { len: 2, rows: 3 }),
            "[isa {isa}] {e:?}"
        );
        assert_message(&e, &["2", "3"]);
        assert!(untouched(&out), "[isa {isa}] logsumexp_rows wrote {out:?}");
    });
}

#[test]
fn invalid_temperature() {
    for t in [
        0.0f32,
        -0.0,
        -1.0,
        -f32::MIN_POSITIVE,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        // Subnormal: 1/t overflows f32.
        f32::from_bits(1),
        f32::from_bits(f32::MIN_POSITIVE.to_bits() - 1),
    ] {
        let e = Softmax::new().with_temperature(t).unwrap_err();
        assert!(
            matches!(e, Error::InvalidTemperature(got) if got.to_bits() == t.to_bits()),
            "temperature {t}: {e:?}"
        );
        assert_message(&e, &[&t.to_string()]);
        // A failed option leaves nothing to run: the output stays as it was.
        let mut y = sentinels(3);
        let result = Softmax::new()
            .with_temperature(t)
            .and_then(|sm| sm.softmax(&[1.0f32, 2.0, 3.0], &mut y));
        assert!(matches!(result, Err(Error::InvalidTemperature(_))));
        assert!(untouched(&y));
    }
    // Every finite t from the smallest normal f32 up is valid.
    for t in [f32::MIN_POSITIVE, 1e-4, 1.0, f32::MAX] {
        let sm = Softmax::new()
            .with_temperature(t)
            .unwrap_or_else(|e| panic!("t = {t:e}: {e}"));
        assert_eq!(sm.temperature().to_bits(), t.to_bits());
    }
}

#[test]
fn isa_unavailable() {
    let unavailable: Vec<Isa> = Isa::ALL.into_iter().filter(|i| !i.is_available()).collect();
    if unavailable.is_empty() {
        eprintln!("isa_unavailable: every ISA is available on this CPU; nothing to refuse");
    }
    for isa in unavailable {
        let e = Softmax::new().with_isa(isa).unwrap_err();
        assert!(
            matches!(e, Error::IsaUnavailable(got) if got == isa),
            "{isa}: {e:?}"
        );
        let available: Vec<&str> = Isa::available().iter().map(|i| i.name()).collect();
        let mut names = vec![isa.name()];
        names.extend(available);
        assert_message(&e, &names);
        let mut y = sentinels(3);
        let result = Softmax::new()
            .with_isa(isa)
            .and_then(|sm| sm.log_softmax(&[1.0f32, 2.0, 3.0], &mut y));
        assert!(matches!(result, Err(Error::IsaUnavailable(_))));
        assert!(untouched(&y));
        eprintln!("isa_unavailable: {isa} refused as expected");
    }
}
