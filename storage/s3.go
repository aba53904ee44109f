package storage

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3 is Storage in a bucket of an S3-compatible server (AWS S3, MinIO,
// versitygw, Ceph RGW...): key "a/b" is the object Prefix+"a/b".
//
// Put streams in parts of S3Config.PartSize: an object that fits in one
// part goes up in one PUT, a larger one as a multipart upload that is
// completed only when the reader ended well (and aborted otherwise), so
// an object appears whole or not at all. One Put holds one part in
// memory. Open reads with ranged GETs pinned to the ETag it opened, so a
// reader never mixes two versions. S3 also presigns URLs (Presigner):
// farms and browsers move bytes with them and hold no credentials.
//
// Credentials never leave S3: errors are rebuilt from the server's error
// code and status, and any text that would carry a credential is
// redacted.
type S3 struct {
	client   *minio.Client
	presign  *minio.Client // client, or one on the public endpoint
	core     minio.Core
	bucket   string
	prefix   string
	partSize int
	bufs     sync.Pool
	secrets  []string
	where    string
	log      *slog.Logger
}

var (
	_ Storage   = (*S3)(nil)
	_ Presigner = (*S3)(nil)
	_ Copier    = (*S3)(nil)
)

// Defaults and limits of S3Config.
const (
	// DefaultPartSize is the part of a multipart upload, and what one Put
	// holds in memory. With S3's 10,000 parts it allows objects of 78 GiB.
	DefaultPartSize = 8 << 20
	// MinPartSize is S3's smallest part (but the last).
	MinPartSize = 5 << 20
	// MaxPresignTTL is the longest a presigned URL lives (S3's limit).
	MaxPresignTTL = 7 * 24 * time.Hour
	// maxCopySize is the largest object S3 copies in one request.
	maxCopySize = 5 << 30
)

// S3Config configures NewS3.
type S3Config struct {
	// Endpoint is the server: "host:port", or a URL "http://host:port"
	// whose scheme overrides Insecure. Empty means AWS S3
	// (s3.amazonaws.com).
	Endpoint string
	// PublicEndpoint, when set, is the server as farms and browsers reach
	// it (a public host name in front of a private address): presigned
	// URLs name it, as Endpoint names the server drover talks to. The
	// same forms as Endpoint.
	PublicEndpoint string
	// Region is the bucket's region; empty lets the client ask the server.
	Region string
	// Bucket holds the objects. Required.
	Bucket string
	// Prefix is put before every key, to share a bucket with other data;
	// "" or a valid prefix ending in "/".
	Prefix string
	// PathStyle addresses the bucket in the path (http://host/bucket/key),
	// as most self-hosted servers want, instead of in the host name.
	PathStyle bool
	// Insecure talks plain HTTP instead of HTTPS.
	Insecure bool
	// Static credentials: AccessKey and SecretKey (SessionToken for
	// temporary ones). Empty AccessKey reads CredentialsFile instead: an
	// AWS shared credentials file (INI), profile Profile ("default" when
	// empty).
	AccessKey, SecretKey, SessionToken string
	CredentialsFile, Profile           string
	// PartSize is a multipart upload's part size; 0 for DefaultPartSize,
	// at least MinPartSize.
	PartSize int
	// CreateBucket creates the bucket when it does not exist.
	CreateBucket bool
	// Transport carries the requests; nil for a copy of
	// http.DefaultTransport.
	Transport http.RoundTripper
	// Logger; nil discards.
	Logger *slog.Logger
}

// NewS3 connects to the bucket and checks that it is there (creating it
// with CreateBucket) and that the credentials are accepted. Its errors
// name the endpoint and bucket, never a credential.
func NewS3(ctx context.Context, cfg S3Config) (*S3, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("storage: s3 needs a bucket")
	}
	if cfg.Prefix != "" && (!strings.HasSuffix(cfg.Prefix, "/") || ValidatePrefix(cfg.Prefix) != nil) {
		return nil, fmt.Errorf("storage: s3 prefix %q must be a key followed by /", cfg.Prefix)
	}
	cfg.PartSize = cmp.Or(cfg.PartSize, DefaultPartSize)
	if cfg.PartSize < MinPartSize {
		return nil, fmt.Errorf("storage: s3 part size %d is below S3's minimum of %d", cfg.PartSize, MinPartSize)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	endpoint, secure, err := parseEndpoint(cfg.Endpoint, !cfg.Insecure)
	if err != nil {
		return nil, err
	}
	creds, secrets, err := s3Credentials(cfg)
	if err != nil {
		return nil, err
	}
	tr := cfg.Transport
	if tr == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 32
		t.ResponseHeaderTimeout = time.Minute
		tr = t
	}
	lookup := minio.BucketLookupAuto
	if cfg.PathStyle {
		lookup = minio.BucketLookupPath
	}
	client, err := minio.New(endpoint, &minio.Options{Creds: creds, Secure: secure, Region: cfg.Region,
		BucketLookup: lookup, Transport: tr, MaxRetries: 3})
	if err != nil {
		return nil, fmt.Errorf("storage: s3 endpoint %q: %s", endpoint, redact(err.Error(), secrets))
	}
	scheme := "https"
	if !secure {
		scheme = "http"
	}
	s := &S3{client: client, presign: client, core: minio.Core{Client: client}, bucket: cfg.Bucket, prefix: cfg.Prefix,
		partSize: cfg.PartSize, secrets: secrets, log: cfg.Logger,
		where: fmt.Sprintf("s3://%s/%s at %s://%s", cfg.Bucket, cfg.Prefix, scheme, endpoint)}
	s.bufs.New = func() any { b := make([]byte, s.partSize); return &b }

	ok, err := client.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		return nil, s.plain("check bucket", "", err)
	}
	if !ok {
		if !cfg.CreateBucket {
			return nil, fmt.Errorf("storage: s3 bucket %q does not exist at %s", cfg.Bucket, endpoint)
		}
		if err := client.MakeBucket(ctx, cfg.Bucket, minio.MakeBucketOptions{Region: cfg.Region}); err != nil {
			return nil, s.plain("create bucket", "", err)
		}
		s.log.Info("created the S3 bucket", "bucket", cfg.Bucket, "endpoint", endpoint)
	}
	if cfg.PublicEndpoint != "" {
		if err := s.publicClient(ctx, cfg, creds, lookup, tr); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// publicClient makes the client that presigns for PublicEndpoint. It
// needs the bucket's region, since presigning asks no server: the
// configured one, or the one the server says.
func (s *S3) publicClient(ctx context.Context, cfg S3Config, creds *credentials.Credentials, lookup minio.BucketLookupType,
	tr http.RoundTripper) error {
	endpoint, secure, err := parseEndpoint(cfg.PublicEndpoint, !cfg.Insecure)
	if err != nil {
		return errors.New(strings.Replace(err.Error(), "s3 endpoint", "s3 public endpoint", 1))
	}
	region := cfg.Region
	if region == "" {
		if region, err = s.client.GetBucketLocation(ctx, cfg.Bucket); err != nil {
			return s.plain("bucket location", "", err)
		}
	}
	if s.presign, err = minio.New(endpoint, &minio.Options{Creds: creds, Secure: secure, Region: region,
		BucketLookup: lookup, Transport: tr}); err != nil {
		return fmt.Errorf("storage: s3 public endpoint %q: %s", endpoint, redact(err.Error(), s.secrets))
	}
	return nil
}

// parseEndpoint splits an endpoint into host:port and whether it is HTTPS.
func parseEndpoint(ep string, secure bool) (string, bool, error) {
	if ep == "" {
		return "s3.amazonaws.com", secure, nil
	}
	if !strings.Contains(ep, "://") {
		ep = "none://" + ep
	}
	u, err := url.Parse(ep)
	if err != nil || u.Host == "" || u.User != nil || strings.Trim(u.Path, "/") != "" || u.RawQuery != "" {
		// Quote nothing of it: an endpoint with a user part may hold a
		// password.
		return "", false, errors.New("storage: the s3 endpoint must be host:port or http(s)://host:port")
	}
	switch u.Scheme {
	case "http":
		secure = false
	case "https":
		secure = true
	case "none":
	default:
		return "", false, errors.New("storage: the s3 endpoint's scheme must be http or https")
	}
	return u.Host, secure, nil
}

// s3Credentials builds the credentials of cfg, and the strings that must
// never be shown.
func s3Credentials(cfg S3Config) (*credentials.Credentials, []string, error) {
	if cfg.AccessKey != "" {
		if cfg.SecretKey == "" {
			return nil, nil, errors.New("storage: s3 has an access key but no secret key")
		}
		return credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, cfg.SessionToken),
			nonEmpty(cfg.AccessKey, cfg.SecretKey, cfg.SessionToken), nil
	}
	if cfg.CredentialsFile == "" {
		return nil, nil, errors.New("storage: s3 has no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a credentials file")
	}
	profile := cmp.Or(cfg.Profile, "default")
	creds := credentials.NewFileAWSCredentials(cfg.CredentialsFile, profile)
	v, err := creds.GetWithContext(nil) // a file: no HTTP client involved
	if err != nil || v.AccessKeyID == "" || v.SecretAccessKey == "" {
		// The parser's error may quote a line of the file: leave it out.
		return nil, nil, fmt.Errorf("storage: s3 credentials file %s: cannot read it, or its profile %q has no aws_access_key_id and aws_secret_access_key",
			cfg.CredentialsFile, profile)
	}
	return creds, nonEmpty(v.AccessKeyID, v.SecretAccessKey, v.SessionToken), nil
}

func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// redact replaces every secret in s.
func redact(s string, secrets []string) string {
	for _, sec := range secrets {
		s = strings.ReplaceAll(s, sec, "[redacted]")
		// A URL or a header may carry it escaped.
		if q := url.QueryEscape(sec); q != sec {
			s = strings.ReplaceAll(s, q, "[redacted]")
		}
	}
	return s
}

// String says where the objects are, without credentials: for logs.
func (s *S3) String() string { return s.where }

// s3Error is an error of the server or the network, rebuilt as plain
// text; it wraps only ErrNotFound or a context's error.
type s3Error struct {
	msg  string
	wrap error
}

func (e *s3Error) Error() string { return e.msg }
func (e *s3Error) Unwrap() error { return e.wrap }

// plain turns what minio-go returned for op on key into an error that
// holds no credential, no request signature and no Go error chain of the
// client: the S3 error code and HTTP status, or the network failure.
func (s *S3) plain(op, key string, err error) error {
	where := "storage: s3 " + op
	if key != "" {
		where += " " + truncate(key)
	}
	var wrap error
	var msg string
	switch er := minio.ToErrorResponse(err); {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		wrap = context.Canceled
		if errors.Is(err, context.DeadlineExceeded) {
			wrap = context.DeadlineExceeded
		}
		msg = wrap.Error()
	case er.Code != "" || er.StatusCode != 0:
		if isNotFound(err) {
			wrap = ErrNotFound
		}
		msg = fmt.Sprintf("%s (HTTP %d)", cmp.Or(er.Code, http.StatusText(er.StatusCode)), er.StatusCode)
		if wrap != nil {
			msg = ErrNotFound.Error()
		}
	default:
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // without the URL
		}
		msg = err.Error()
	}
	return &s3Error{msg: where + ": " + redact(msg, s.secrets), wrap: wrap}
}

// isNotFound reports a minio-go error that means "no such object".
func isNotFound(err error) bool {
	er := minio.ToErrorResponse(err)
	switch er.Code {
	case "NoSuchKey", "NotFound":
		return true
	case "NoSuchBucket":
		return false
	}
	return er.StatusCode == http.StatusNotFound
}

// Put implements Storage.
func (s *S3) Put(ctx context.Context, key string, r io.Reader) (int64, error) {
	if err := ValidateKey(key); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("storage: put %s: %w", key, err)
	}
	bp := s.bufs.Get().(*[]byte)
	defer s.bufs.Put(bp)
	buf := *bp
	n, eof, err := readPart(ctx, r, buf)
	if err != nil {
		return 0, fmt.Errorf("storage: put %s: %w", key, err)
	}
	obj := s.prefix + key
	opts := minio.PutObjectOptions{ContentType: "application/octet-stream"}
	if eof {
		if _, err := s.core.PutObject(ctx, s.bucket, obj, bytes.NewReader(buf[:n]), int64(n), "", "", opts); err != nil {
			return 0, s.plain("put", key, err)
		}
		return int64(n), nil
	}
	return s.putMultipart(ctx, key, r, buf, n, opts)
}

// putMultipart uploads r, whose first part buf[:n] is read, in parts.
func (s *S3) putMultipart(ctx context.Context, key string, r io.Reader, buf []byte, n int, opts minio.PutObjectOptions) (_ int64, err error) {
	obj := s.prefix + key
	id, err := s.core.NewMultipartUpload(ctx, s.bucket, obj, opts)
	if err != nil {
		return 0, s.plain("put", key, err)
	}
	defer func() {
		if err == nil {
			return
		}
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if aerr := s.core.AbortMultipartUpload(actx, s.bucket, obj, id); aerr != nil {
			s.log.Warn("abort a failed multipart upload; the bucket's lifecycle rules must clean it up",
				"key", key, "err", s.plain("abort", key, aerr))
		}
	}()
	var parts []minio.CompletePart
	var total int64
	for eof := false; ; {
		if n > 0 || len(parts) == 0 {
			p, err := s.core.PutObjectPart(ctx, s.bucket, obj, id, len(parts)+1, bytes.NewReader(buf[:n]), int64(n),
				minio.PutObjectPartOptions{})
			if err != nil {
				return 0, s.plain("put", key, err)
			}
			parts = append(parts, minio.CompletePart{PartNumber: p.PartNumber, ETag: p.ETag})
			total += int64(n)
		}
		if eof {
			break
		}
		if len(parts) == 10000 {
			return 0, fmt.Errorf("storage: put %s: larger than 10,000 parts of %d bytes", key, len(buf))
		}
		if n, eof, err = readPart(ctx, r, buf); err != nil {
			return 0, fmt.Errorf("storage: put %s: %w", key, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("storage: put %s: %w", key, err)
	}
	if _, err := s.core.CompleteMultipartUpload(ctx, s.bucket, obj, id, parts, opts); err != nil {
		return 0, s.plain("put", key, err)
	}
	return total, nil
}

// readPart fills buf from r and says whether r ended. It stops when ctx
// ends.
func readPart(ctx context.Context, r io.Reader, buf []byte) (int, bool, error) {
	n := 0
	for n < len(buf) {
		if err := ctx.Err(); err != nil {
			return n, false, err
		}
		k, err := r.Read(buf[n:])
		n += k
		if errors.Is(err, io.EOF) {
			return n, true, nil
		}
		if err != nil {
			return n, false, err
		}
	}
	return n, false, ctx.Err()
}

// Open implements Storage. The object reads with ctx: it ends when ctx
// does.
func (s *S3) Open(ctx context.Context, key string) (Object, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", key, err)
	}
	body, oi, _, err := s.core.GetObject(ctx, s.bucket, s.prefix+key, minio.GetObjectOptions{})
	if err != nil {
		return nil, s.plain("open", key, err)
	}
	return &s3Object{s: s, ctx: ctx, key: key, etag: oi.ETag, body: body,
		info: Info{Key: key, Size: oi.Size, ModTime: oi.LastModified}}, nil
}

// s3Object reads an object from its current offset with one GET, which a
// Seek elsewhere replaces; every GET after the first requires the ETag
// the object had when it was opened.
type s3Object struct {
	s    *S3
	ctx  context.Context
	key  string
	etag string
	info Info

	off     int64
	body    io.ReadCloser // reads from bodyOff; nil: none open
	bodyOff int64
}

func (o *s3Object) Info() Info { return o.info }

func (o *s3Object) Read(p []byte) (int, error) {
	if o.off >= o.info.Size {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if o.body != nil && o.bodyOff != o.off {
		_ = o.body.Close()
		o.body = nil
	}
	if o.body == nil {
		opts := minio.GetObjectOptions{}
		if o.off > 0 {
			if err := opts.SetRange(o.off, 0); err != nil {
				return 0, err
			}
		}
		if o.etag != "" {
			if err := opts.SetMatchETag(o.etag); err != nil {
				return 0, err
			}
		}
		body, _, _, err := o.s.core.GetObject(o.ctx, o.s.bucket, o.s.prefix+o.key, opts)
		if err != nil {
			if isNotFound(err) || minio.ToErrorResponse(err).StatusCode == http.StatusPreconditionFailed {
				return 0, fmt.Errorf("storage: read %s: the object was replaced or deleted while it was open", o.key)
			}
			return 0, o.s.plain("read", o.key, err)
		}
		o.body, o.bodyOff = body, o.off
	}
	n, err := o.body.Read(p)
	o.off += int64(n)
	o.bodyOff = o.off
	switch {
	case errors.Is(err, io.EOF):
		if o.off < o.info.Size {
			return n, fmt.Errorf("storage: read %s: %w", o.key, io.ErrUnexpectedEOF)
		}
		return n, io.EOF
	case err != nil:
		return n, o.s.plain("read", o.key, err)
	}
	return n, nil
}

func (o *s3Object) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = o.off + offset
	case io.SeekEnd:
		abs = o.info.Size + offset
	default:
		return 0, errors.New("storage: seek: bad whence")
	}
	if abs < 0 {
		return 0, errors.New("storage: seek: negative position")
	}
	o.off = abs
	return abs, nil
}

func (o *s3Object) Close() error {
	if o.body != nil {
		err := o.body.Close()
		o.body = nil
		return err
	}
	return nil
}

// Stat implements Storage.
func (s *S3) Stat(ctx context.Context, key string) (Info, error) {
	if err := ValidateKey(key); err != nil {
		return Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return Info{}, fmt.Errorf("storage: stat %s: %w", key, err)
	}
	oi, err := s.client.StatObject(ctx, s.bucket, s.prefix+key, minio.StatObjectOptions{})
	if err != nil {
		return Info{}, s.plain("stat", key, err)
	}
	return Info{Key: key, Size: oi.Size, ModTime: oi.LastModified}, nil
}

// List implements Storage.
func (s *S3) List(ctx context.Context, prefix string) ([]Info, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("storage: list %q: %w", prefix, err)
	}
	out := []Info{}
	for oi := range s.client.ListObjectsIter(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix + prefix, Recursive: true}) {
		if oi.Err != nil {
			return nil, s.plain("list", prefix, oi.Err)
		}
		key := strings.TrimPrefix(oi.Key, s.prefix)
		if strings.HasSuffix(key, "/") || ValidateKey(key) != nil {
			continue // a "directory" marker, or an object drover did not write
		}
		out = append(out, Info{Key: key, Size: oi.Size, ModTime: oi.LastModified})
	}
	slices.SortFunc(out, func(a, b Info) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// Delete implements Storage.
func (s *S3) Delete(ctx context.Context, key string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("storage: delete %s: %w", key, err)
	}
	err := s.client.RemoveObject(ctx, s.bucket, s.prefix+key, minio.RemoveObjectOptions{})
	if err != nil && !isNotFound(err) {
		return s.plain("delete", key, err)
	}
	return nil
}

// DeletePrefix implements Storage: a listing, then batched deletes.
func (s *S3) DeletePrefix(ctx context.Context, prefix string) (int, error) {
	if prefix == "" {
		return 0, fmt.Errorf("%w: DeletePrefix needs a prefix", ErrInvalidKey)
	}
	infos, err := s.List(ctx, prefix)
	if err != nil {
		return 0, err
	}
	if len(infos) == 0 {
		return 0, nil
	}
	ch := make(chan minio.ObjectInfo, len(infos))
	for _, in := range infos {
		ch <- minio.ObjectInfo{Key: s.prefix + in.Key}
	}
	close(ch)
	n := 0
	var first error
	for res := range s.client.RemoveObjectsWithResult(ctx, s.bucket, ch, minio.RemoveObjectsOptions{}) {
		if res.Err != nil && !isNotFound(res.Err) {
			if first == nil {
				first = s.plain("delete prefix", prefix, res.Err)
			}
			continue
		}
		n++
	}
	return n, first
}

// PresignGet implements Presigner.
func (s *S3) PresignGet(ctx context.Context, key string, ttl time.Duration) (string, error) {
	if err := ValidateKey(key); err != nil {
		return "", err
	}
	u, err := s.presign.PresignedGetObject(ctx, s.bucket, s.prefix+key, presignTTL(ttl), nil)
	if err != nil {
		return "", s.plain("presign", key, err)
	}
	return u.String(), nil
}

// PresignPut implements Presigner.
func (s *S3) PresignPut(ctx context.Context, key string, ttl time.Duration) (string, error) {
	if err := ValidateKey(key); err != nil {
		return "", err
	}
	u, err := s.presign.PresignedPutObject(ctx, s.bucket, s.prefix+key, presignTTL(ttl))
	if err != nil {
		return "", s.plain("presign", key, err)
	}
	return u.String(), nil
}

// presignTTL keeps ttl between a second and S3's limit.
func presignTTL(ttl time.Duration) time.Duration {
	return min(max(ttl, time.Second), MaxPresignTTL)
}

// Copy implements Copier: the server copies; objects above S3's 5 GiB
// copy limit stream through.
func (s *S3) Copy(ctx context.Context, from, to string) error {
	if err := ValidateKey(from); err != nil {
		return err
	}
	if err := ValidateKey(to); err != nil {
		return err
	}
	info, err := s.Stat(ctx, from)
	if err != nil {
		return err
	}
	if info.Size > maxCopySize {
		obj, err := s.Open(ctx, from)
		if err != nil {
			return err
		}
		defer obj.Close()
		_, err = s.Put(ctx, to, obj)
		return err
	}
	_, err = s.client.CopyObject(ctx, minio.CopyDestOptions{Bucket: s.bucket, Object: s.prefix + to},
		minio.CopySrcOptions{Bucket: s.bucket, Object: s.prefix + from})
	if err != nil {
		return s.plain("copy", from, err)
	}
	return nil
}
