// Command media measures the media module against the plain ways of doing the same work,
// in one run: uploading 1 MB files over loopback HTTP (multipart, streamed, hashed,
// fsynced, recorded, kept) as a ratio to `cp` of the same bytes to the same disk, each copy
// kept as an upload is (and to an in-process os.WriteFile, with and without fsync); serving an original over HTTP as a ratio to http.FileServer of
// the same file; and variant generation time per megapixel.
//
//	go run ./media [-d 3s] [-c 4] [-rounds 3] [-cpuprofile file]
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"image"
	"image/png"
	"io"
	"log"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/stratadb/strata"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/bench/internal/harness"
	"github.com/stratadb/strata/internal/server"
	"github.com/stratadb/strata/media"
)

func main() {
	dur := flag.Duration("d", 3*time.Second, "duration of each case per round")
	conc := flag.Int("c", 4, "concurrent clients")
	rounds := flag.Int("rounds", 3, "interleaved rounds")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run (server and clients) to this file")
	flag.Parse()
	defer harness.CPUProfile(*cpuProfile)()
	ctx := context.Background()
	s, cleanup, err := harness.Platform(ctx, strata.Config{AdminPassword: "bench-admin-password",
		Media: media.Config{Limits: media.Limits{Kinds: []string{media.KindImage, media.KindFile}, MaxWidth: 4000, MaxHeight: 4000}}})
	if err != nil {
		log.Fatal(err)
	}
	defer cleanup()
	tenant, err := harness.Tenant(ctx, s, "bench")
	if err != nil {
		log.Fatal(err)
	}
	api := server.New(server.Deps{Pool: s.Pool(), Ready: s.Ready, Auth: s.Auth(), Audit: s.Audit(), Media: s.Media(), Version: "bench"})
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := server.NewHTTPServer(server.Config{}, api, nil)
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	base := "http://" + ln.Addr().String()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *conc * 2}}
	tok, err := s.Auth().SignIn(ctx, "admin", "bench-admin-password", "")
	if err != nil {
		log.Fatal(err)
	}
	authz := "Bearer " + tok.AccessToken

	// The same disk: the platform's data directory holds the media store and the copies.
	store, ok := s.Media().Store().(*media.FileStore)
	if !ok {
		log.Fatal("not a file store")
	}
	scratch := filepath.Join(filepath.Dir(store.TempDir()), "..", "bench-copies")
	if err := os.MkdirAll(scratch, 0o750); err != nil {
		log.Fatal(err)
	}
	payload := make([]byte, 1<<20)
	_, _ = rand.Read(payload)
	src := filepath.Join(scratch, "src.bin")
	if err := os.WriteFile(src, payload, 0o600); err != nil {
		log.Fatal(err)
	}
	// Every case keeps what it writes until the upload table is done, as a media store
	// keeps its uploads: a copy removed at once never reaches the disk (ext4 allocates
	// its blocks only at writeback) and hands its page-cache pages straight to the next
	// copy, which on a virtual machine saves the first touch of new guest memory — about
	// 3 ms of CPU per fresh MiB on this machine, more than the copy itself. The old
	// baseline, cp followed by rm, is still measured for reference.
	kept := filepath.Join(scratch, "kept")
	if err := os.MkdirAll(kept, 0o750); err != nil {
		log.Fatal(err)
	}
	var n atomic.Int64
	cpTo := func(ctx context.Context, dst string) error { return exec.CommandContext(ctx, "cp", src, dst).Run() }
	cp := func(ctx context.Context) error { return cpTo(ctx, filepath.Join(kept, fmt.Sprintf("cp-%d", n.Add(1)))) }
	cpRemoved := func(ctx context.Context) error {
		dst := filepath.Join(scratch, fmt.Sprintf("cprm-%d", n.Add(1)))
		if err := cpTo(ctx, dst); err != nil {
			return err
		}
		return os.Remove(dst)
	}
	write := func(context.Context) error {
		return os.WriteFile(filepath.Join(kept, fmt.Sprintf("w-%d", n.Add(1))), payload, 0o600)
	}
	writeSync := func(context.Context) error {
		f, err := os.Create(filepath.Join(kept, fmt.Sprintf("s-%d", n.Add(1))))
		if err != nil {
			return err
		}
		_, err = f.Write(payload)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	}
	// The multipart envelope is built once; each upload streams it around the payload
	// (as cp streams a file), with distinct first bytes so nothing is deduplicated.
	var head, tail bytes.Buffer
	mw := multipart.NewWriter(&head)
	_, _ = mw.CreateFormFile("file", "x.bin")
	boundary := mw.Boundary()
	_ = mw.Close()
	tail.Write(head.Bytes()[bytes.LastIndex(head.Bytes(), []byte("\r\n--"+boundary+"--")):])
	head.Truncate(bytes.LastIndex(head.Bytes(), []byte("\r\n--"+boundary+"--")))
	contentType := mw.FormDataContentType()
	upload := func(ctx context.Context) error {
		var unique [8]byte
		binary.BigEndian.PutUint64(unique[:], uint64(n.Add(1))) //nolint:gosec // a counter
		body := io.MultiReader(bytes.NewReader(head.Bytes()), bytes.NewReader(unique[:]), bytes.NewReader(payload[8:]),
			bytes.NewReader(tail.Bytes()))
		req, _ := http.NewRequestWithContext(ctx, "POST", base+"/v1/t/"+tenant+"/media", body)
		req.ContentLength = int64(head.Len() + len(payload) + tail.Len())
		req.Header.Set("Content-Type", contentType)
		req.Header.Set("Authorization", authz)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != 201 {
			return fmt.Errorf("upload: %d", resp.StatusCode)
		}
		return nil
	}
	fmt.Printf("## media (%d CPUs, %d clients, %d rounds of %s)\n\n", runtime.NumCPU(), *conc, *rounds, *dur)
	fmt.Println("Upload of 1 MB files (Strata: multipart over loopback HTTP, hashed, fsynced, recorded):")
	fmt.Println()
	res := harness.Interleave(*rounds, *conc, *dur, harness.Case{Name: "cp, copy kept (baseline)", Op: cp},
		harness.Case{Name: "cp, then rm (the copy never reaches the disk)", Op: cpRemoved},
		harness.Case{Name: "os.WriteFile, kept", Op: write}, harness.Case{Name: "write + fsync, kept", Op: writeSync},
		harness.Case{Name: "strata upload", Op: upload})
	harness.Table(os.Stdout, res[0], res[1:]...)
	if err := os.RemoveAll(kept); err != nil {
		log.Fatal(err)
	}

	// Serving an original.
	var up media.Upload
	if err := func() error {
		body := &bytes.Buffer{}
		mw := multipart.NewWriter(body)
		pw, _ := mw.CreateFormFile("file", "x.bin")
		_, _ = pw.Write(payload)
		_ = mw.Close()
		req, _ := http.NewRequestWithContext(ctx, "POST", base+"/v1/t/"+tenant+"/media", body)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		req.Header.Set("Authorization", authz)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(&up)
	}(); err != nil {
		log.Fatal(err)
	}
	fsLn, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	fsSrv := &http.Server{Handler: http.FileServer(http.Dir(scratch)), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = fsSrv.Serve(fsLn) }()
	defer fsSrv.Close()
	get := func(url, authz string) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
			if authz != "" {
				req.Header.Set("Authorization", authz)
			}
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			n, _ := io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != 200 || n != int64(len(payload)) {
				return fmt.Errorf("get: %d, %d bytes", resp.StatusCode, n)
			}
			return nil
		}
	}
	fmt.Println()
	fmt.Println("Serving a 1 MB original over loopback HTTP:")
	fmt.Println()
	res = harness.Interleave(*rounds, *conc, *dur, harness.Case{Name: "http.FileServer (baseline)", Op: get("http://"+fsLn.Addr().String()+"/src.bin", "")},
		harness.Case{Name: "strata original", Op: get(base+"/v1/t/"+tenant+"/media/"+up.Alias, authz)})
	harness.Table(os.Stdout, res[0], res[1:]...)

	// Variant generation per megapixel.
	img := image.NewRGBA(image.Rect(0, 0, 2000, 1000))
	_, _ = rand.Read(img.Pix)
	var pb bytes.Buffer
	_ = (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&pb, img)
	sys := auth.System(ctx)
	iu, err := s.Media().Upload(sys, tenant, media.UploadInput{Body: &pb, ContentType: "image/png"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println()
	fmt.Println("Variant generation of a 2 MP PNG (decode, process, encode, store, record), one at a time:")
	fmt.Println()
	fmt.Println("| spec | ms | ms per megapixel |")
	fmt.Println("|---|---:|---:|")
	for _, spec := range []string{"thumbnail=256", "thumbnail=256/format=jpeg", "resize=fill:800x800/format=jpeg", "blur=3/format=jpeg", "format=png"} {
		start := time.Now()
		b, _, err := s.Media().VariantOpen(sys, tenant, iu.Alias, spec, nil)
		if err != nil {
			log.Fatal(spec, ": ", err)
		}
		_ = b.Close()
		ms := float64(time.Since(start).Microseconds()) / 1000
		fmt.Printf("| %s | %.1f | %.1f |\n", spec, ms, ms/2)
	}
}
