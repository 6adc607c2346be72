package server

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/preboot/preboot/bootfiles"
	"github.com/preboot/preboot/config"
)

// stageSigned stages Debian's signed shim and GRUB (the Secure Boot path)
// in the background: a download from a Debian mirror must not hold up the
// start. Until they are staged, a device that needs them gets no answer
// and an event that says why (policy), never unsigned iPXE.
func stageSigned(ctx context.Context, cfg config.Config, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	start := time.Now()
	if err := bootfiles.StageSigned(ctx, cfg.TFTP.Root, cfg.Boot.SignedCache, log); err != nil {
		if errors.Is(ctx.Err(), context.Canceled) {
			return // shutting down
		}
		log.ErrorContext(ctx, "Secure Boot path unavailable: UEFI clients that need it get no answer until shim and GRUB are staged (restart after fixing)", "err", err)
		return
	}
	log.InfoContext(ctx, "Secure Boot path ready", "shim", bootfiles.ShimName, "grub", bootfiles.GRUBName, "took", time.Since(start).Round(time.Millisecond))
}
