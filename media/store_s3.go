package media

import (
	"context"

	"fmt"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Config names an S3-compatible bucket.
type S3Config struct {
	// Endpoint is the server's host[:port] ("s3.amazonaws.com", "127.0.0.1:7070").
	Endpoint string
	// Bucket holds the blobs; it must exist unless CreateBucket.
	Bucket string
	// Prefix is put before every identifier ("media/"); empty means none.
	Prefix string
	// AccessKey and SecretKey sign requests.
	AccessKey, SecretKey string
	// Region is the bucket's region; empty lets the client discover it.
	Region string
	// Insecure talks plain HTTP instead of HTTPS (for local servers).
	Insecure bool
	// CreateBucket creates the bucket when it does not exist.
	CreateBucket bool
}

// S3Store keeps blobs as objects in an S3-compatible bucket. An object becomes visible
// only once completely uploaded and acknowledged durable by the server, so Put is atomic.
type S3Store struct {
	c      *minio.Client
	bucket string
	prefix string
}

// NewS3Store connects to the bucket and checks that it exists (creating it with
// CreateBucket).
func NewS3Store(ctx context.Context, cfg S3Config) (*S3Store, error) {
	c, err := minio.New(cfg.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure: !cfg.Insecure, Region: cfg.Region})
	if err != nil {
		return nil, fmt.Errorf("media s3 store: %w", err)
	}
	ok, err := c.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("media s3 store: checking bucket %q: %w", cfg.Bucket, err)
	}
	if !ok {
		if !cfg.CreateBucket {
			return nil, fmt.Errorf("media s3 store: bucket %q does not exist", cfg.Bucket)
		}
		if err := c.MakeBucket(ctx, cfg.Bucket, minio.MakeBucketOptions{Region: cfg.Region}); err != nil {
			return nil, fmt.Errorf("media s3 store: creating bucket %q: %w", cfg.Bucket, err)
		}
	}
	return &S3Store{c: c, bucket: cfg.Bucket, prefix: cfg.Prefix}, nil
}

// Name is "s3".
func (s *S3Store) Name() string { return "s3" }

func notFound(err error) bool {
	code := minio.ToErrorResponse(err).Code
	return code == "NoSuchKey" || code == "NotFound"
}

// Put uploads the file at path as the object id.
func (s *S3Store) Put(ctx context.Context, id, path string) error {
	if _, err := s.c.FPutObject(ctx, s.bucket, s.prefix+id, path, minio.PutObjectOptions{ContentType: "application/octet-stream"}); err != nil {
		return fmt.Errorf("storing %s in s3: %w", id, err)
	}
	return nil
}

// Open opens the object for reading (seekable, for ranges).
func (s *S3Store) Open(ctx context.Context, id string) (Blob, error) {
	obj, err := s.c.GetObject(ctx, s.bucket, s.prefix+id, minio.GetObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("opening %s in s3: %w", id, err)
	}
	if _, err := obj.Stat(); err != nil {
		_ = obj.Close()
		if notFound(err) {
			return nil, ErrBlobNotFound
		}
		return nil, fmt.Errorf("opening %s in s3: %w", id, err)
	}
	return obj, nil
}

// Stat answers the object's size.
func (s *S3Store) Stat(ctx context.Context, id string) (int64, error) {
	info, err := s.c.StatObject(ctx, s.bucket, s.prefix+id, minio.StatObjectOptions{})
	if err != nil {
		if notFound(err) {
			return 0, ErrBlobNotFound
		}
		return 0, fmt.Errorf("checking %s in s3: %w", id, err)
	}
	return info.Size, nil
}

// Delete removes the object; a missing object is not an error.
func (s *S3Store) Delete(ctx context.Context, id string) error {
	if err := s.c.RemoveObject(ctx, s.bucket, s.prefix+id, minio.RemoveObjectOptions{}); err != nil && !notFound(err) {
		return fmt.Errorf("deleting %s in s3: %w", id, err)
	}
	return nil
}

// List walks every object under the prefix.
func (s *S3Store) List(ctx context.Context, fn func(id string, modified time.Time) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the listing goroutine when fn fails
	for obj := range s.c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix, Recursive: true}) {
		if obj.Err != nil {
			return fmt.Errorf("listing s3: %w", obj.Err)
		}
		if err := fn(strings.TrimPrefix(obj.Key, s.prefix), obj.LastModified); err != nil {
			return err
		}
	}
	return ctx.Err()
}

var _ Store = (*S3Store)(nil)
