//! `pudnet._native`: the native core of pudnet — thin PyO3 bindings over plain Rust modules.
//!
//! * [`idx`], [`cifar`], [`folder`]: loaders into one contiguous uint8 store `[N, C, H, W]` + int64 labels;
//! * [`sampler`]: the episodic sampler, bit-identical to the Python reference `pudnet.data.sampler`;
//! * [`gather`]: an episode batch's images in one contiguous array;
//! * [`pool`]: the fork-safe rayon pool every parallel call runs in.
//!
//! Bindings release the GIL for all heavy work, hand their vectors to numpy without copying, raise
//! `DataError` / `TooFewImagesError` (both `ValueError`s; `pudnet.data.native` re-raises pudnet's own
//! classes) and never let a panic cross into Python: any panic becomes a `DataError` naming it a bug.

pub mod cifar;
pub mod error;
pub mod folder;
pub mod gather;
pub mod idx;
pub mod pool;
pub mod sampler;

#[cfg(test)]
mod fuzz;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use numpy::ndarray::{Array1, Array2, ArrayD, IxDyn};
use numpy::{
    PyArray, PyArray1, PyArray2, PyArrayDyn, PyReadonlyArray1, PyReadonlyArrayDyn, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyIndexError, PyValueError};
use pyo3::prelude::*;

use crate::error::{DataError, SampleError};

pyo3::create_exception!(
    _native,
    NativeDataError,
    PyValueError,
    "A data file or folder is missing or malformed."
);
pyo3::create_exception!(
    _native,
    NativeTooFewImagesError,
    PyValueError,
    "A class holds fewer images than an episode needs."
);

/// (images, labels) as numpy arrays.
type StoreArrays<'py> = (Bound<'py, PyArrayDyn<u8>>, Bound<'py, PyArray1<i64>>);

fn data_err(e: DataError) -> PyErr {
    NativeDataError::new_err(e.to_string())
}

fn sample_err(e: SampleError) -> PyErr {
    match e {
        SampleError::TooFewImages { .. } => NativeTooFewImagesError::new_err(e.to_string()),
        _ => PyValueError::new_err(e.to_string()),
    }
}

/// Runs a binding body, turning a panic (a bug, never bad input) into `pyo3.PanicException` — named as
/// such, not as a data error — instead of unwinding into Python.
fn guarded<T>(what: &str, f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(pyo3::panic::PanicException::new_err(format!(
                "{what}: internal error in pudnet._native (a bug, please report it): {msg}"
            )))
        }
    }
}

fn to_array<'py, T: numpy::Element>(
    py: Python<'py>,
    shape: &[usize],
    data: Vec<T>,
) -> PyResult<Bound<'py, PyArrayDyn<T>>> {
    let arr = ArrayD::from_shape_vec(IxDyn(shape), data).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(PyArray::from_owned_array(py, arr))
}

fn labels_array(py: Python<'_>, labels: Vec<i64>) -> Bound<'_, PyArray1<i64>> {
    PyArray::from_owned_array(py, Array1::from_vec(labels))
}

/// read_idx(path) -> uint8 array of the file's dimensions (raw or gzip IDX).
#[pyfunction]
fn read_idx<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyArrayDyn<u8>>> {
    guarded(&path.display().to_string(), || {
        let a = py.allow_threads(|| idx::read_idx(&path)).map_err(data_err)?;
        to_array(py, &a.dims, a.data)
    })
}

/// parse_idx(data, name="<bytes>") -> uint8 array: IDX bytes held in memory.
#[pyfunction]
#[pyo3(signature = (data, name = "<bytes>"))]
fn parse_idx<'py>(py: Python<'py>, data: &[u8], name: &str) -> PyResult<Bound<'py, PyArrayDyn<u8>>> {
    guarded(name, || {
        let a = py
            .allow_threads(|| idx::parse_idx(data, name))
            .map_err(data_err)?;
        to_array(py, &a.dims, a.data)
    })
}

/// load_idx(images_path, labels_path) -> (uint8 [N, C, H, W], int64 [N]).
#[pyfunction]
fn load_idx<'py>(py: Python<'py>, images_path: PathBuf, labels_path: PathBuf) -> PyResult<StoreArrays<'py>> {
    guarded(&images_path.display().to_string(), || {
        let s = py
            .allow_threads(|| pool::install(|| idx::load_idx_pair(&images_path, &labels_path)))
            .map_err(data_err)?;
        Ok((to_array(py, &s.shape, s.images)?, labels_array(py, s.labels)))
    })
}

fn cifar_args(kind: &str, label: &str) -> PyResult<(cifar::CifarKind, cifar::LabelKind)> {
    let kind = match kind {
        "cifar10" => cifar::CifarKind::Cifar10,
        "cifar100" => cifar::CifarKind::Cifar100,
        _ => {
            return Err(PyValueError::new_err(format!(
                "kind must be 'cifar10' or 'cifar100', got {kind:?}"
            )))
        }
    };
    let label = match label {
        "fine" => cifar::LabelKind::Fine,
        "coarse" => cifar::LabelKind::Coarse,
        _ => {
            return Err(PyValueError::new_err(format!(
                "label must be 'fine' or 'coarse', got {label:?}"
            )))
        }
    };
    Ok((kind, label))
}

/// read_cifar(paths, kind, label="fine") -> (uint8 [N, 3, 32, 32], int64 [N]).
#[pyfunction]
#[pyo3(signature = (paths, kind, label = "fine"))]
fn read_cifar<'py>(
    py: Python<'py>,
    paths: Vec<PathBuf>,
    kind: &str,
    label: &str,
) -> PyResult<StoreArrays<'py>> {
    let (kind, label) = cifar_args(kind, label)?;
    guarded("read_cifar", || {
        let s = py
            .allow_threads(|| pool::install(|| cifar::read_cifar(&paths, kind, label)))
            .map_err(data_err)?;
        let shape = [s.n, cifar::SHAPE[0], cifar::SHAPE[1], cifar::SHAPE[2]];
        Ok((to_array(py, &shape, s.images)?, labels_array(py, s.labels)))
    })
}

/// parse_cifar(data, kind, label="fine", name="<bytes>") -> (uint8 [N, 3, 32, 32], int64 [N]).
#[pyfunction]
#[pyo3(signature = (data, kind, label = "fine", name = "<bytes>"))]
fn parse_cifar<'py>(
    py: Python<'py>,
    data: &[u8],
    kind: &str,
    label: &str,
    name: &str,
) -> PyResult<StoreArrays<'py>> {
    let (kind, label) = cifar_args(kind, label)?;
    guarded(name, || {
        let s = py
            .allow_threads(|| cifar::parse_cifar(data, name, kind, label))
            .map_err(data_err)?;
        let shape = [s.n, cifar::SHAPE[0], cifar::SHAPE[1], cifar::SHAPE[2]];
        Ok((to_array(py, &shape, s.images)?, labels_array(py, s.labels)))
    })
}

/// read_image_folder(root, size=None, channels=None, progress=None)
///     -> (uint8 [N, C, H, W], int64 [N], class names, file paths).
#[pyfunction]
#[pyo3(signature = (root, size = None, channels = None, progress = None))]
#[allow(clippy::type_complexity)]
fn read_image_folder<'py>(
    py: Python<'py>,
    root: PathBuf,
    size: Option<(u32, u32)>,
    channels: Option<usize>,
    progress: Option<bool>,
) -> PyResult<(
    Bound<'py, PyArrayDyn<u8>>,
    Bound<'py, PyArray1<i64>>,
    Vec<String>,
    Vec<String>,
)> {
    let progress = match progress {
        Some(true) => folder::Progress::Always,
        Some(false) => folder::Progress::Never,
        None => folder::Progress::Auto(2000),
    };
    guarded(&root.display().to_string(), || {
        let f = py
            .allow_threads(|| pool::install(|| folder::load_folder(&root, size, channels, progress)))
            .map_err(data_err)?;
        let files = f.files.iter().map(|p| p.display().to_string()).collect();
        Ok((
            to_array(py, &f.shape, f.images)?,
            labels_array(py, f.labels),
            f.classes,
            files,
        ))
    })
}

/// decode_image(data, name="<bytes>", size=None, channels=None) -> uint8 [C, H, W].
#[pyfunction]
#[pyo3(signature = (data, name = "<bytes>", size = None, channels = None))]
fn decode_image<'py>(
    py: Python<'py>,
    data: &[u8],
    name: &str,
    size: Option<(u32, u32)>,
    channels: Option<usize>,
) -> PyResult<Bound<'py, PyArrayDyn<u8>>> {
    guarded(name, || {
        let p = py
            .allow_threads(|| folder::decode(data, name, size, channels))
            .map_err(data_err)?;
        to_array(py, &[p.channels, p.height, p.width], p.data)
    })
}

/// gather(images, index) -> uint8 array of shape index.shape + images.shape[1:] (C-contiguous input).
#[pyfunction]
#[pyo3(name = "gather")]
fn gather_images<'py>(
    py: Python<'py>,
    images: PyReadonlyArrayDyn<'py, u8>,
    index: PyReadonlyArrayDyn<'py, i64>,
) -> PyResult<Bound<'py, PyArrayDyn<u8>>> {
    guarded("gather", || {
        if images.ndim() < 1 {
            return Err(PyValueError::new_err("images must have at least one dimension"));
        }
        let item_shape = images.shape()[1..].to_vec();
        let item: usize = item_shape.iter().product();
        let store = images
            .as_slice()
            .map_err(|_| PyValueError::new_err("images must be C-contiguous"))?;
        let idx = index
            .as_slice()
            .map_err(|_| PyValueError::new_err("index must be C-contiguous"))?;
        // The GIL stays held: with it released another Python thread could write to `images` while it is
        // read. A gather copies one episode's images (well under a millisecond), so holding it costs little.
        let out = pool::install(|| gather::gather(store, item, idx)).map_err(PyIndexError::new_err)?;
        let shape: Vec<usize> = index.shape().iter().chain(item_shape.iter()).copied().collect();
        to_array(py, &shape, out)
    })
}

/// Sampler(labels, class_pool, ways, sketch, support, query, query_labels=None): the episodic sampler
/// with each pool class's members precomputed; see `pudnet.data.sampler` for the specification.
#[pyclass(frozen, module = "pudnet._native")]
struct Sampler {
    inner: sampler::Sampler,
}

type EpisodeArrays<'py, A> = (Bound<'py, A>, Bound<'py, A>, Bound<'py, A>, Bound<'py, A>);

#[pymethods]
impl Sampler {
    #[new]
    #[pyo3(signature = (labels, class_pool, ways, sketch, support, query, query_labels = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        labels: PyReadonlyArray1<'_, i64>,
        class_pool: Vec<i64>,
        ways: usize,
        sketch: usize,
        support: usize,
        query: usize,
        query_labels: Option<PyReadonlyArray1<'_, i64>>,
    ) -> PyResult<Self> {
        guarded("Sampler", || {
            let spec = sampler::Spec {
                ways,
                sketch,
                support,
                query,
            };
            let labels = labels
                .as_slice()
                .map_err(|_| PyValueError::new_err("labels must be contiguous"))?;
            let q = match &query_labels {
                Some(q) => Some(
                    q.as_slice()
                        .map_err(|_| PyValueError::new_err("query_labels must be contiguous"))?,
                ),
                None => None,
            };
            let inner = py
                .allow_threads(|| sampler::Sampler::new(labels, &class_pool, spec, q))
                .map_err(sample_err)?;
            Ok(Sampler { inner })
        })
    }

    /// episode(seed, index) -> (classes, sketch, support, query) int64 arrays.
    fn episode<'py>(
        &self,
        py: Python<'py>,
        seed: u64,
        index: u64,
    ) -> PyResult<EpisodeArrays<'py, PyArray1<i64>>> {
        guarded("Sampler.episode", || {
            let e = self.inner.episode(seed, index).map_err(sample_err)?;
            Ok((
                labels_array(py, e.classes),
                labels_array(py, e.sketch),
                labels_array(py, e.support),
                labels_array(py, e.query),
            ))
        })
    }

    /// episodes(seed, indices) -> (classes [B, ways], sketch [B, ways*sketch], support [B, ways*support],
    /// query [B, ways*query]) int64 arrays, drawn in parallel with the GIL released.
    fn episodes<'py>(
        &self,
        py: Python<'py>,
        seed: u64,
        indices: PyReadonlyArray1<'py, u64>,
    ) -> PyResult<EpisodeArrays<'py, PyArray2<i64>>> {
        guarded("Sampler.episodes", || {
            let idx = indices
                .as_slice()
                .map_err(|_| PyValueError::new_err("indices must be contiguous"))?;
            let inner = &self.inner;
            let b = py
                .allow_threads(|| pool::install(|| inner.episodes(seed, idx)))
                .map_err(|(pos, e)| match e {
                    SampleError::TooFewImages { .. } => {
                        NativeTooFewImagesError::new_err(format!("episode {}: {e}", idx[pos]))
                    }
                    e => sample_err(e),
                })?;
            let (nc, ns, np, nq) = inner.sizes();
            let mk = |w: usize, v: Vec<i64>| -> PyResult<Bound<'py, PyArray2<i64>>> {
                let a = Array2::from_shape_vec((b.count, w), v)
                    .map_err(|e| PyValueError::new_err(e.to_string()))?;
                Ok(PyArray::from_owned_array(py, a))
            };
            Ok((
                mk(nc, b.classes)?,
                mk(ns, b.sketch)?,
                mk(np, b.support)?,
                mk(nq, b.query)?,
            ))
        })
    }

    /// The sorted class pool.
    #[getter]
    fn class_pool(&self) -> Vec<i64> {
        self.inner.pool.clone()
    }

    /// (ways, sketch, support, query)
    #[getter]
    fn spec(&self) -> (usize, usize, usize, usize) {
        let s = self.inner.spec;
        (s.ways, s.sketch, s.support, s.query)
    }

    /// Whether the queries come from a separate store.
    #[getter]
    fn separate_queries(&self) -> bool {
        self.inner.has_query_store()
    }
}

/// set_num_threads(n): worker threads of later parallel calls (0 = default: PUDNET_NUM_THREADS,
/// RAYON_NUM_THREADS, or the CPU count).
#[pyfunction]
fn set_num_threads(n: usize) {
    pool::set_num_threads(n);
}

/// num_threads() -> the number of worker threads parallel calls use.
#[pyfunction]
fn num_threads() -> PyResult<usize> {
    guarded("num_threads", || Ok(pool::num_threads()))
}

/// _panic_for_test(in_pool): panics inside the guard (on a worker thread if in_pool), to prove that no
/// panic unwinds into Python. Only in builds with the `test-hooks` feature.
#[cfg(feature = "test-hooks")]
#[pyfunction]
fn _panic_for_test(py: Python<'_>, in_pool: bool) -> PyResult<()> {
    guarded("_panic_for_test", || {
        py.allow_threads(|| {
            if in_pool {
                pool::install(|| {
                    use rayon::prelude::*;
                    (0..64).into_par_iter().for_each(|i| {
                        if i == 37 {
                            panic!("deliberate panic on a worker thread");
                        }
                    })
                });
            }
            panic!("deliberate panic");
        })
    })
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("DataError", py.get_type::<NativeDataError>())?;
    m.add("TooFewImagesError", py.get_type::<NativeTooFewImagesError>())?;
    m.add_class::<Sampler>()?;
    m.add_function(wrap_pyfunction!(read_idx, m)?)?;
    m.add_function(wrap_pyfunction!(parse_idx, m)?)?;
    m.add_function(wrap_pyfunction!(load_idx, m)?)?;
    m.add_function(wrap_pyfunction!(read_cifar, m)?)?;
    m.add_function(wrap_pyfunction!(parse_cifar, m)?)?;
    m.add_function(wrap_pyfunction!(read_image_folder, m)?)?;
    m.add_function(wrap_pyfunction!(decode_image, m)?)?;
    m.add_function(wrap_pyfunction!(gather_images, m)?)?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(num_threads, m)?)?;
    #[cfg(feature = "test-hooks")]
    m.add_function(wrap_pyfunction!(_panic_for_test, m)?)?;
    Ok(())
}
