//! Chunk reads through `DeviceApi::read_chunk` (cached package) against a plain
//! `Bytes::slice` of the same buffer. Prints the ratio measured in the same run.
#![allow(missing_docs, clippy::missing_panics_doc)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use ota_core::checksum::ChecksumAlgorithm;
use ota_server::blob::BlobStore;
use ota_server::model::{
    DeviceProfile, OtaPackage, PackageId, PackageSource, PackageType, ProfileId,
};
use ota_server::service::{DeviceApi, Ota, ServiceConfig, UploadMeta};
use ota_server::store::SqlStore;

const CHUNK: u64 = 4096;
const CHUNKS: u64 = 256;

fn setup(rt: &tokio::runtime::Runtime, dir: &std::path::Path) -> (Ota, OtaPackage, Bytes) {
    rt.block_on(async {
        let store = SqlStore::connect(&format!("sqlite://{}", dir.join("ota.db").display()))
            .await
            .expect("store");
        let blobs =
            BlobStore::from_url(&format!("file://{}", dir.join("blobs").display())).expect("blobs");
        let ota = Ota::new(Arc::new(store), blobs, ServiceConfig::default());
        let prof = DeviceProfile {
            id: ProfileId::new_random(),
            created_time: 0,
            name: "p".into(),
            firmware_id: None,
            software_id: None,
        };
        ota.store().create_profile(&prof).await.expect("profile");
        let pkg = OtaPackage {
            id: PackageId::new_random(),
            created_time: 0,
            profile_id: prof.id,
            package_type: PackageType::Firmware,
            title: "bench".into(),
            version: "1".into(),
            tag: None,
            source: PackageSource::Pending,
            sming_app_id: None,
            additional_info: None,
        };
        ota.store().create_package(&pkg).await.expect("package");
        let image = Bytes::from(vec![
            0x5a_u8;
            usize::try_from(CHUNK * CHUNKS).expect("size")
        ]);
        let meta = UploadMeta {
            algorithm: ChecksumAlgorithm::Sha256,
            declared: None,
            file_name: "b.bin".into(),
            content_type: "application/octet-stream".into(),
        };
        let pkg = ota
            .upload(
                pkg.id,
                meta,
                futures_util::stream::iter([Ok::<_, std::io::Error>(image.clone())]),
            )
            .await
            .expect("upload");
        ota.read_chunk(&pkg, 0, CHUNK)
            .await
            .expect("warm the cache");
        (ota, pkg, image)
    })
}

fn per_chunk(mut f: impl FnMut(u64) -> usize) -> Duration {
    let rounds = 200;
    let start = Instant::now();
    for _ in 0..rounds {
        for n in 0..CHUNKS {
            black_box(f(n));
        }
    }
    start.elapsed() / u32::try_from(rounds * CHUNKS).expect("count")
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let (ota, pkg, image) = setup(&rt, dir.path());
    let size = usize::try_from(CHUNK).expect("chunk");
    let mut group = c.benchmark_group("chunk_read_4k");
    group.bench_function("DeviceApi::read_chunk", |b| {
        b.iter(|| {
            rt.block_on(async {
                ota.read_chunk(&pkg, black_box(7), CHUNK)
                    .await
                    .expect("chunk")
                    .len()
            })
        });
    });
    group.bench_function("Bytes::slice", |b| {
        b.iter(|| image.slice(black_box(7) * size..8 * size).len());
    });
    group.finish();

    let api = per_chunk(|n| {
        rt.block_on(async { ota.read_chunk(&pkg, n, CHUNK).await.expect("chunk").len() })
    });
    let plain = per_chunk(|n| {
        let start = usize::try_from(n).expect("index") * size;
        image.slice(start..start + size).len()
    });
    println!(
        "chunk_read ratio: DeviceApi::read_chunk {api:?} / Bytes::slice {plain:?} = {:.1}x per 4 KiB chunk",
        api.as_secs_f64() / plain.as_secs_f64().max(1e-12)
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
