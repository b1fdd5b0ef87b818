//! The public surface: ISA detection and naming, the options and their
//! defaults, the free functions, and the `Auto` algorithm's switch point.

use crate::common;

use common::{Rng, Values, ALGORITHMS};
use softmax::{Algorithm, Isa, Parallelism, Softmax, AUTO_ONLINE_FROM_COLS};

#[test]
fn isa_detection_is_consistent() {
    let available = Isa::available();
    assert_eq!(
        available.first(),
        Some(&Isa::Scalar),
        "Scalar is always available, first"
    );
    assert!(Isa::Scalar.is_available());
    assert!(
        available.contains(&Isa::detect()),
        "detect() {} is available",
        Isa::detect()
    );
    assert_eq!(
        Isa::detect(),
        *available.iter().max_by_key(|i| i.lanes()).unwrap()
    );
    assert_eq!(Isa::ALL.len(), 4);
    for isa in Isa::ALL {
        assert_eq!(available.contains(&isa), isa.is_available(), "{isa}");
        assert_eq!(isa.to_string(), isa.name());
    }
    let names: Vec<&str> = Isa::ALL.iter().map(|i| i.name()).collect();
    assert_eq!(names, ["scalar", "avx2", "avx512", "neon"]);
    let lanes: Vec<usize> = Isa::ALL.iter().map(|i| i.lanes()).collect();
    assert_eq!(lanes, [1, 8, 16, 4]);
    #[cfg(target_arch = "aarch64")]
    assert!(!Isa::Avx2.is_available() && !Isa::Avx512.is_available());
    #[cfg(target_arch = "x86_64")]
    assert!(!Isa::Neon.is_available());
    let skipped: Vec<Isa> = Isa::ALL.into_iter().filter(|i| !i.is_available()).collect();
    let ran: Vec<&str> = available.iter().map(|i| i.name()).collect();
    for isa in &skipped {
        eprintln!("SKIPPED: {isa} not available on this CPU");
    }
    common::print_coverage("isa_detection_is_consistent", &ran, &skipped);
}

#[test]
fn options_defaults_and_getters() {
    let sm = Softmax::new();
    assert_eq!(sm.temperature(), 1.0);
    assert_eq!(sm.isa(), Isa::detect());
    assert_eq!(sm.algorithm(), Algorithm::Auto);
    assert!(matches!(sm.parallelism(), Parallelism::Auto));
    assert_eq!(Softmax::default().isa(), Isa::detect());

    let sm = Softmax::new()
        .with_temperature(0.7)
        .unwrap()
        .with_isa(Isa::Scalar)
        .unwrap()
        .with_algorithm(Algorithm::Online)
        .with_parallelism(Parallelism::Serial);
    assert_eq!(sm.temperature(), 0.7);
    assert_eq!(sm.isa(), Isa::Scalar);
    assert_eq!(sm.algorithm(), Algorithm::Online);
    assert!(matches!(sm.parallelism(), Parallelism::Serial));

    assert_eq!(Algorithm::default(), Algorithm::Auto);
    assert_eq!(
        Algorithm::METHODS,
        [Algorithm::ThreePass, Algorithm::Online]
    );
    let names: Vec<&str> = ALGORITHMS.iter().map(|a| a.name()).collect();
    assert_eq!(names, ["auto", "three-pass", "online"]);
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn free_functions_use_the_default_options() {
    let x = Values::Normal30.generate(&mut Rng::new(40), 300, 1.0);
    let sm = Softmax::new();
    let (mut a, mut b) = (vec![0.0f32; 300], vec![0.0f32; 300]);
    softmax::softmax(&x, &mut a).unwrap();
    sm.softmax(&x, &mut b).unwrap();
    assert_eq!(bits(&a), bits(&b), "softmax");
    softmax::log_softmax(&x, &mut a).unwrap();
    sm.log_softmax(&x, &mut b).unwrap();
    assert_eq!(bits(&a), bits(&b), "log_softmax");
    let (mut a, mut b) = (x.clone(), x.clone());
    softmax::softmax_in_place(&mut a).unwrap();
    sm.softmax_in_place(&mut b).unwrap();
    assert_eq!(bits(&a), bits(&b), "softmax_in_place");
    let (mut a, mut b) = (x.clone(), x.clone());
    softmax::log_softmax_in_place(&mut a).unwrap();
    sm.log_softmax_in_place(&mut b).unwrap();
    assert_eq!(bits(&a), bits(&b), "log_softmax_in_place");
    assert_eq!(
        softmax::logsumexp(&x).unwrap().to_bits(),
        sm.logsumexp(&x).unwrap().to_bits(),
        "logsumexp"
    );
}

/// `Auto` is three-pass below `AUTO_ONLINE_FROM_COLS` and online from it on
/// (bitwise, on every ISA).
#[test]
fn auto_switches_to_online_at_the_documented_length() {
    common::for_each_isa("auto_switches_to_online_at_the_documented_length", |isa| {
        let with = |a: Algorithm| Softmax::new().with_isa(isa).unwrap().with_algorithm(a);
        for (n, expected) in [
            (AUTO_ONLINE_FROM_COLS - 1, Algorithm::ThreePass),
            (AUTO_ONLINE_FROM_COLS, Algorithm::Online),
        ] {
            let x = Values::Normal30.generate(&mut Rng::new(n as u64), n, 1.0);
            let (mut auto, mut named) = (vec![0.0f32; n], vec![0.0f32; n]);
            with(Algorithm::Auto).softmax(&x, &mut auto).unwrap();
            with(expected).softmax(&x, &mut named).unwrap();
            assert!(
                bits(&auto) == bits(&named),
                "[isa {isa}] len {n}: Auto differs from {}",
                expected.name()
            );
        }
    });
}

/// The public `Isa::Scalar` path and pulp's scalar token through the kernels
/// crate are the same code: bitwise equal.
#[test]
fn scalar_isa_is_the_generic_body_on_the_scalar_token() {
    use softmax_kernels::arch::Portable;
    use softmax_kernels::{Forward, Job, Method, Output, Strided, StridedMut, Temperature};
    let x = Values::Uniform10.generate(&mut Rng::new(41), 777, 1.0);
    for (algorithm, method) in [
        (Algorithm::ThreePass, Method::ThreePass),
        (Algorithm::Online, Method::Online),
    ] {
        let mut public = vec![0.0f32; x.len()];
        let sm = Softmax::new()
            .with_isa(Isa::Scalar)
            .unwrap()
            .with_algorithm(algorithm);
        sm.softmax(&x, &mut public).unwrap();
        let mut kernel = vec![0.0f32; x.len()];
        let n = x.len();
        Forward {
            output: Output::Softmax,
            method,
            temperature: Temperature::new(1.0),
            cap: None,
            x: Some(Strided::new(&x[..], 1, n, n)),
            y: StridedMut::new(&mut kernel[..], 1, n, n),
        }
        .run(Portable(pulp::Scalar::new()), &mut []);
        assert_eq!(bits(&public), bits(&kernel), "{}", algorithm.name());
    }
}
