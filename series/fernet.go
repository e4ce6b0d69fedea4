package series

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"hash"
	"sync"

	"github.com/fernet/fernet-go"
)

// Fernet tokens are verified here rather than with fernet.VerifyAndDecrypt, which
// prepares an HMAC and an AES key schedule for every token and every key it tries: at
// tens of thousands of messages a second that preparation costs more than the
// cryptography. openKey prepares them once per key. The format is the Fernet spec's
// (version 0x80, timestamp, IV, AES-128-CBC ciphertext with PKCS #7 padding, HMAC-SHA256
// over all of it); keys are made, parsed and used for encryption by fernet-go, and the
// fuzz test checks that every token accepted here is accepted by fernet-go too.

// openKey is a Fernet key prepared for verification and decryption.
type openKey struct {
	block cipher.Block
	macs  sync.Pool // of hash.Hash: HMAC-SHA256 keyed with the signing key
}

func prepareKey(k *fernet.Key) *openKey {
	sign, crypt := append([]byte(nil), k[:16]...), k[16:]
	block, err := aes.NewCipher(crypt)
	if err != nil {
		panic(err) // 16 bytes: cannot fail
	}
	ok := &openKey{block: block}
	ok.macs.New = func() any { return hmac.New(sha256.New, sign) }
	return ok
}

func decodeToken(tok []byte) ([]byte, bool) {
	raw := make([]byte, base64.URLEncoding.DecodedLen(len(tok)))
	n, err := base64.URLEncoding.Decode(raw, tok)
	return raw[:n], err == nil
}

func encodeToken(raw []byte) []byte {
	out := make([]byte, base64.URLEncoding.EncodedLen(len(raw)))
	base64.URLEncoding.Encode(out, raw)
	return out
}

const (
	fernetHeader = 1 + 8 + aes.BlockSize // version, timestamp, IV
	fernetMAC    = sha256.Size
)

// authentic reports whether raw (a decoded token) carries k's signature, in constant time.
func (k *openKey) authentic(raw []byte) bool {
	n := len(raw) - fernetMAC
	h := k.macs.Get().(hash.Hash)
	h.Reset()
	h.Write(raw[:n])
	var sum [fernetMAC]byte
	ok := hmac.Equal(h.Sum(sum[:0]), raw[n:])
	k.macs.Put(h)
	return ok
}

// decryptPayload decrypts an authentic token's ciphertext and removes its padding.
func (k *openKey) decryptPayload(raw []byte) ([]byte, bool) {
	ct := raw[fernetHeader : len(raw)-fernetMAC]
	if len(ct) == 0 || len(ct)%aes.BlockSize != 0 {
		return nil, false
	}
	out := make([]byte, len(ct))
	cipher.NewCBCDecrypter(k.block, raw[1+8:fernetHeader]).CryptBlocks(out, ct)
	pad := int(out[len(out)-1])
	if pad == 0 || pad > aes.BlockSize {
		return nil, false
	}
	for _, c := range out[len(out)-pad:] {
		if int(c) != pad {
			return nil, false
		}
	}
	return out[:len(out)-pad], true
}
