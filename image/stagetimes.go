package image

import "github.com/preboot/preboot/timing"

// Pools of the pipelines, as the timing breakdown names them.
const (
	poolSetup     = "setup"     // restore: before the pipeline starts
	poolWorkers   = "workers"   // restore: check, fetch, verify
	poolWriter    = "writer"    // restore: in-order writes, final sync
	poolReader    = "reader"    // capture: sequential reads
	poolHashers   = "hashers"   // capture: zero check + BLAKE3
	poolBatcher   = "batcher"   // capture: which chunks the store lacks
	poolUploaders = "uploaders" // capture: compress + upload
)

// restoreTimes are the stage counters of one restore.
type restoreTimes struct {
	check, fetch, verify, write, sync *timing.Counter
}

func newRestoreTimes(tm *timing.Recorder, workers int) restoreTimes {
	return restoreTimes{
		check:  tm.Stage("check", timing.Disk, poolWorkers, workers),
		fetch:  tm.Stage("fetch", timing.Network, poolWorkers, workers),
		verify: tm.Stage("verify", timing.CPU, poolWorkers, workers),
		write:  tm.Stage("write", timing.Disk, poolWriter, 1),
		sync:   tm.Stage("sync", timing.Disk, poolWriter, 1),
	}
}

// captureTimes are the stage counters of one capture.
type captureTimes struct {
	read, hash, lookup, compress, upload *timing.Counter
}

func newCaptureTimes(tm *timing.Recorder, workers int) captureTimes {
	return captureTimes{
		read:     tm.Stage("read", timing.Disk, poolReader, 1),
		hash:     tm.Stage("hash", timing.CPU, poolHashers, workers),
		lookup:   tm.Stage("lookup", timing.Network, poolBatcher, 1),
		compress: tm.Stage("compress", timing.CPU, poolUploaders, workers),
		upload:   tm.Stage("upload", timing.Network, poolUploaders, workers),
	}
}
