package media_test

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/gif"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/testworld"
	"github.com/stratadb/strata/media"
	"github.com/stratadb/strata/queue"
)

func TestParseSpec(t *testing.T) {
	t.Parallel()
	ok := map[string]string{
		"thumbnail=128":                       "thumbnail=128",
		"format=jpeg/thumbnail=64":            "thumbnail=64/format=jpeg",
		"resize=fill:20x10/blur=2/format=png": "resize=fill:20x10/blur=2/format=png",
		"crop=0,0,5,5":                        "crop=0,0,5,5",
	}
	for in, want := range ok {
		if got, err := media.ParseSpec(in); err != nil || got != want {
			t.Errorf("%q → %q %v, want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "thumbnail", "thumbnail=0", "thumbnail=99999", "resize=fit:10", "resize=squash:1x1",
		"crop=1,2,3", "blur=0", "blur=51", "format=webp", "rotate=90", "thumbnail=-1", "a=1/b=2/c=3/d=4/e=5/f=6/g=7/h=8/i=9/j=10/k=11"} {
		if _, err := media.ParseSpec(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// variantEnv runs a queue and the media service's worker.
func variantEnv(t *testing.T, cfg media.Config) *env {
	t.Helper()
	e := setup(t, media.Config{})
	q := queue.New(e.Pool, e.Auth, e.Listener, queue.Config{PollInterval: 50 * time.Millisecond})
	cfg.Queue, cfg.Listener = q, e.Listener
	e.s = media.New(e.Pool, e.Auth, e.store, cfg)
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { q.Run(ctx) })
	wg.Go(func() { e.s.Run(ctx) })
	t.Cleanup(func() { stop(); wg.Wait() })
	return e
}

func TestVariantGeneratedOnceAndServed(t *testing.T) {
	t.Parallel()
	e := variantEnv(t, media.Config{})
	up := e.upload(t, pngBytes(t, 40, 20, 1), "image/png")
	// HEAD-style: not there yet.
	_, _, err := e.s.VariantOpen(e.ctx, e.Tenant, up.Alias, "thumbnail=10/format=jpeg", &media.VariantOptions{ExistsOnly: true})
	wantProblem(t, err, 404, "variant_not_found")
	const n = 5
	var wg sync.WaitGroup
	out := make([]media.Variant, n)
	errs := make([]error, n)
	for i := range n {
		spec := "thumbnail=10/format=jpeg"
		if i%2 == 1 {
			spec = "format=jpeg/thumbnail=10" // the same spec, canonically
		}
		wg.Go(func() {
			var b media.Blob
			b, out[i], errs[i] = e.s.VariantOpen(e.As(testworld.Viewer), e.Tenant, up.Alias, spec, nil)
			if b != nil {
				raw, _ := io.ReadAll(b)
				_ = b.Close()
				cfg, format, err := image.DecodeConfig(bytes.NewReader(raw))
				if err != nil || format != "jpeg" || cfg.Width != 10 || cfg.Height != 5 {
					t.Errorf("variant bytes: %v %s %dx%d", err, format, cfg.Width, cfg.Height)
				}
			}
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || out[i].Spec != "thumbnail=10/format=jpeg" || out[i].Details.Width != 10 || out[i].Details.Format != "jpeg" {
			t.Fatalf("%d: %+v %v", i, out[i], errs[i])
		}
	}
	if c := e.count(t, "media_variants"); c != 1 {
		t.Fatalf("%d variant rows", c)
	}
	if len(e.blobs(t)) != 2 {
		t.Fatalf("blobs: %v", e.blobs(t))
	}
	if _, _, err := e.s.VariantOpen(e.ctx, e.Tenant, up.Alias, "thumbnail=10/format=jpeg", &media.VariantOptions{ExistsOnly: true}); err != nil {
		t.Fatalf("exists: %v", err)
	}
	// Fill crops to the exact box; blur keeps the size.
	_, v, err := e.s.VariantOpen(e.ctx, e.Tenant, up.Alias, "resize=fill:8x8/blur=1", nil)
	if err != nil || v.Details.Width != 8 || v.Details.Height != 8 || v.Details.Format != "png" {
		t.Fatalf("fill: %+v %v", v, err)
	}
	_, _, err = e.s.VariantOpen(e.ctx, e.Tenant, up.Alias, "rotate=9", nil)
	wantProblem(t, err, 422, "invalid_spec")
	_, _, err = e.s.VariantOpen(e.As(testworld.Outsider), e.Tenant, up.Alias, "thumbnail=10", nil)
	wantProblem(t, err, 404, "tenant_not_found")
	// Backgrounded: 503 pending at once, then there.
	_, _, err = e.s.VariantOpen(e.ctx, e.Tenant, up.Alias, "thumbnail=4", &media.VariantOptions{NoWait: true})
	wantProblem(t, err, 503, "variant_pending")
	// Deleting the last alias takes the variants and their blobs along.
	if err := e.s.MediaDelete(e.ctx, e.Tenant, up.Alias, up.DeleteToken); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(e.blobs(t)) != 0 || e.count(t, "media_variants") != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("left: %v, %d variants", e.blobs(t), e.count(t, "media_variants"))
		}
		time.Sleep(20 * time.Millisecond) // the backgrounded job may finish (and be discarded) after the delete
		_, _ = e.s.BlobsPrune(context.Background())
	}
}

func TestVariantsEvictAndDeleteAll(t *testing.T) {
	t.Parallel()
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e := variantEnv(t, media.Config{Now: clock})
	up := e.upload(t, pngBytes(t, 30, 30, 4), "")
	for _, spec := range []string{"thumbnail=5", "thumbnail=6", "thumbnail=7"} {
		if _, _, err := e.s.VariantOpen(e.ctx, e.Tenant, up.Alias, spec, nil); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	now = now.Add(time.Hour)
	mu.Unlock()
	b, _, err := e.s.VariantOpen(e.ctx, e.Tenant, up.Alias, "thumbnail=6", nil) // touched: stays
	if err != nil {
		t.Fatal(err)
	}
	_ = b.Close()
	n, err := e.s.VariantsEvict(context.Background(), now.Add(-time.Minute))
	if err != nil || n != 2 || e.count(t, "media_variants") != 1 || len(e.blobs(t)) != 2 {
		t.Fatalf("evict: %d %v, %v", n, err, e.blobs(t))
	}
	_, err = e.s.VariantsDeleteAll(e.As(testworld.Member), e.Tenant)
	wantProblem(t, err, 403, "forbidden")
	n, err = e.s.VariantsDeleteAll(e.ctx, e.Tenant)
	if err != nil || n != 1 || e.count(t, "media_variants") != 0 || len(e.blobs(t)) != 1 {
		t.Fatalf("delete all: %d %v %v", n, err, e.blobs(t))
	}
}

// A producer that claims a variant's job and then stops heart-beating (a crashed or
// wedged node) is taken over once its lease runs out: a waiting GET gets the variant from
// another worker, made once, and the stalled producer's late completion changes nothing.
func TestVariantStalledProducerTakenOver(t *testing.T) {
	t.Parallel()
	e := setup(t, media.Config{})
	q := queue.New(e.Pool, e.Auth, e.Listener, queue.Config{PollInterval: 50 * time.Millisecond, ReapInterval: 100 * time.Millisecond})
	cfg := media.Config{Queue: q, Listener: e.Listener, VariantWait: 15 * time.Second}
	e.s = media.New(e.Pool, e.Auth, e.store, cfg)
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { stop(); wg.Wait() }()
	wg.Go(func() { q.Run(ctx) }) // the queue (and its reaper), but no media worker yet
	up := e.upload(t, pngBytes(t, 30, 30, 4), "image/png")
	const spec = "thumbnail=12"
	_, _, err := e.s.VariantOpen(e.ctx, e.Tenant, up.Alias, spec, &media.VariantOptions{NoWait: true})
	wantProblem(t, err, 503, "variant_pending")

	// The stalled producer: claims the job with a one-second lease, then goes silent.
	sys := auth.System(context.Background())
	jobs, err := q.JobClaim(sys, e.Tenant, "media-variants", &queue.ClaimOptions{Lease: time.Second, Worker: "stalled"})
	if err != nil || len(jobs) != 1 {
		t.Fatalf("stalled claim: %v %v", jobs, err)
	}
	stalled := jobs[0].Claim()

	// A healthy node starts; a GET waits through the takeover.
	wg.Go(func() { e.s.Run(ctx) })
	start := time.Now()
	b, v, err := e.s.VariantOpen(e.ctx, e.Tenant, up.Alias, spec, nil)
	if err != nil {
		t.Fatalf("after the stall: %v", err)
	}
	_ = b.Close()
	if v.Details.Width != 12 {
		t.Fatalf("variant: %+v", v)
	}
	if waited := time.Since(start); waited > 10*time.Second {
		t.Fatalf("taken over only after %v", waited)
	}
	job, err := q.JobGet(sys, e.Tenant, "media-variants", stalled.ID)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for job.State != "completed" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		if job, err = q.JobGet(sys, e.Tenant, "media-variants", stalled.ID); err != nil {
			t.Fatal(err)
		}
	}
	if job.State != "completed" || job.Attempt != 2 {
		t.Fatalf("job after the takeover: %s, attempt %d", job.State, job.Attempt)
	}
	// The stalled producer wakes up and reports: refused, nothing changes.
	if err := q.JobComplete(sys, e.Tenant, "media-variants", stalled, nil); err == nil {
		t.Fatal("a late completion from the stalled producer was accepted")
	}
	if c := e.count(t, "media_variants"); c != 1 || len(e.blobs(t)) != 2 {
		t.Fatalf("%d variant rows, blobs %v", c, e.blobs(t))
	}
}

// An animated GIF's GIF variant keeps every frame, composed as a viewer shows it, with
// its delays and loop count; its PNG variant is a still of the first frame.
func TestVariantAnimatedGIF(t *testing.T) {
	t.Parallel()
	e := variantEnv(t, media.Config{})
	red, blue, green := color.RGBA{255, 0, 0, 255}, color.RGBA{0, 0, 255, 255}, color.RGBA{0, 255, 0, 255}
	pal := color.Palette{red, blue, green, color.Transparent}
	full := image.NewPaletted(image.Rect(0, 0, 40, 20), pal) // all red
	// Frame 2 paints the left half blue and frame 3 the right half green, each with a local
	// palette of its one colour; frame 3 asks to be cleared afterwards, so frame 4 (a dot
	// in a corner) shows the right half transparent.
	left := image.NewPaletted(image.Rect(0, 0, 20, 20), color.Palette{blue})
	right := image.NewPaletted(image.Rect(20, 0, 40, 20), color.Palette{green})
	dot := image.NewPaletted(image.Rect(0, 0, 1, 1), pal)
	var src bytes.Buffer
	if err := gif.EncodeAll(&src, &gif.GIF{Image: []*image.Paletted{full, left, right, dot}, Delay: []int{10, 20, 30, 40},
		Disposal: []byte{gif.DisposalNone, gif.DisposalNone, gif.DisposalBackground, gif.DisposalNone}, LoopCount: 3,
		Config: image.Config{ColorModel: pal, Width: 40, Height: 20}}); err != nil {
		t.Fatal(err)
	}
	up := e.upload(t, src.Bytes(), "image/gif")
	if up.Details.Frames != 4 {
		t.Fatalf("upload details: %+v", up.Details)
	}
	b, v, err := e.s.VariantOpen(e.ctx, e.Tenant, up.Alias, "thumbnail=10", nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(b)
	_ = b.Close()
	g, err := gif.DecodeAll(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if v.Details.Frames != 4 || v.Details.Format != "gif" || len(g.Image) != 4 || g.LoopCount != 3 ||
		g.Delay[0] != 10 || g.Delay[1] != 20 || g.Delay[2] != 30 || g.Delay[3] != 40 {
		t.Fatalf("animated variant: %+v, %d frames, loop %d, delays %v", v.Details, len(g.Image), g.LoopCount, g.Delay)
	}
	at := func(frame, x, y int) color.RGBA {
		r, gg, bb, a := g.Image[frame].At(x, y).RGBA()
		return color.RGBA{uint8(r >> 8), uint8(gg >> 8), uint8(bb >> 8), uint8(a >> 8)}
	}
	// Each output frame is whole: the composition so far, scaled to 10×5.
	clear := color.RGBA{}
	want := [][2]color.RGBA{{red, red}, {blue, red}, {blue, green}, {blue, clear}} // left and right edge per frame
	for i, w := range want {
		if g.Image[i].Bounds() != image.Rect(0, 0, 10, 5) {
			t.Fatalf("frame %d bounds %v", i, g.Image[i].Bounds())
		}
		if l, r := at(i, 0, 2), at(i, 9, 2); l != w[0] || r != w[1] {
			t.Errorf("frame %d: left %v right %v, want %v %v", i, l, r, w[0], w[1])
		}
	}
	if g.Disposal[3] != gif.DisposalBackground {
		t.Errorf("whole frames must be cleared before the next: disposal %v", g.Disposal)
	}
	_, still, err := e.s.VariantOpen(e.ctx, e.Tenant, up.Alias, "thumbnail=10/format=png", nil)
	if err != nil || still.Details.Frames != 1 || still.Details.Format != "png" {
		t.Fatalf("still: %+v %v", still.Details, err)
	}
}

// A spec that would enlarge an image past the area limit is refused before any work.
func TestVariantTooLarge(t *testing.T) {
	t.Parallel()
	e := variantEnv(t, media.Config{})
	up := e.upload(t, pngBytes(t, 4, 4, 1), "image/png")
	_, _, err := e.s.VariantOpen(e.ctx, e.Tenant, up.Alias, "resize=fill:10000x10000", nil)
	wantProblem(t, err, 422, "variant_too_large")
	if _, v, err := e.s.VariantOpen(e.ctx, e.Tenant, up.Alias, "resize=fit:100x100", nil); err != nil || v.Details.Width != 100 {
		t.Fatalf("an enlargement within the limit: %+v %v", v.Details, err)
	}
}
