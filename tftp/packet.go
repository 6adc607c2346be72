package tftp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Opcode is a TFTP packet type (RFC 1350 §5, RFC 2347).
type Opcode uint16

// TFTP opcodes.
const (
	OpRRQ   Opcode = 1
	OpWRQ   Opcode = 2
	OpDATA  Opcode = 3
	OpACK   Opcode = 4
	OpERROR Opcode = 5
	OpOACK  Opcode = 6
)

func (o Opcode) String() string {
	switch o {
	case OpRRQ:
		return "RRQ"
	case OpWRQ:
		return "WRQ"
	case OpDATA:
		return "DATA"
	case OpACK:
		return "ACK"
	case OpERROR:
		return "ERROR"
	case OpOACK:
		return "OACK"
	}
	return fmt.Sprintf("opcode(%d)", uint16(o))
}

// ErrorCode is the code carried by an ERROR packet (RFC 1350 appendix, RFC 2347).
type ErrorCode uint16

// TFTP error codes.
const (
	ErrUndefined        ErrorCode = 0
	ErrFileNotFound     ErrorCode = 1
	ErrAccessViolation  ErrorCode = 2
	ErrDiskFull         ErrorCode = 3
	ErrIllegalOperation ErrorCode = 4
	ErrUnknownTID       ErrorCode = 5
	ErrFileExists       ErrorCode = 6
	ErrNoSuchUser       ErrorCode = 7
	ErrOptionRefused    ErrorCode = 8
)

// Packet is one parsed TFTP packet: *RequestPacket, *DataPacket, *AckPacket, *ErrorPacket or *OAckPacket.
type Packet interface {
	Opcode() Opcode
	// AppendBinary appends the wire form of the packet to b.
	AppendBinary(b []byte) ([]byte, error)
}

// Option is one RFC 2347 option as sent on the wire (name as given, value as text).
type Option struct {
	Name  string
	Value string
}

// RequestPacket is a read (RRQ) or write (WRQ) request.
type RequestPacket struct {
	Op       Opcode // OpRRQ or OpWRQ
	Filename string
	Mode     string
	Options  []Option
}

// DataPacket carries one block of file content. Data aliases the parsed buffer.
type DataPacket struct {
	Block uint16
	Data  []byte
}

// AckPacket acknowledges a block (or, with block 0, an OACK).
type AckPacket struct {
	Block uint16
}

// ErrorPacket reports an error and ends the transfer.
type ErrorPacket struct {
	Code    ErrorCode
	Message string
}

// OAckPacket acknowledges the options of a request (RFC 2347).
type OAckPacket struct {
	Options []Option
}

func (p *RequestPacket) Opcode() Opcode { return p.Op }
func (*DataPacket) Opcode() Opcode      { return OpDATA }
func (*AckPacket) Opcode() Opcode       { return OpACK }
func (*ErrorPacket) Opcode() Opcode     { return OpERROR }
func (*OAckPacket) Opcode() Opcode      { return OpOACK }

// Errors returned by ParsePacket.
var (
	ErrShortPacket   = errors.New("tftp: packet too short")
	ErrUnknownOpcode = errors.New("tftp: unknown opcode")
	ErrMalformed     = errors.New("tftp: malformed packet")
)

// ParsePacket decodes one TFTP packet. It is pure and never panics; the returned packet may
// alias b (DataPacket.Data). Trailing garbage after an incomplete option pair in a request or
// OACK is ignored, as some firmware pads its requests.
func ParsePacket(b []byte) (Packet, error) {
	if len(b) < 2 {
		return nil, ErrShortPacket
	}
	op := Opcode(binary.BigEndian.Uint16(b))
	body := b[2:]
	switch op {
	case OpRRQ, OpWRQ:
		strs, err := splitStrings(body)
		if err != nil {
			return nil, err
		}
		if len(strs) < 2 {
			return nil, fmt.Errorf("%w: %s without filename and mode", ErrMalformed, op)
		}
		if strs[0] == "" {
			return nil, fmt.Errorf("%w: %s with empty filename", ErrMalformed, op)
		}
		return &RequestPacket{Op: op, Filename: strs[0], Mode: strs[1], Options: pairs(strs[2:])}, nil
	case OpDATA:
		if len(body) < 2 {
			return nil, ErrShortPacket
		}
		return &DataPacket{Block: binary.BigEndian.Uint16(body), Data: body[2:]}, nil
	case OpACK:
		if len(body) < 2 {
			return nil, ErrShortPacket
		}
		return &AckPacket{Block: binary.BigEndian.Uint16(body)}, nil
	case OpERROR:
		if len(body) < 2 {
			return nil, ErrShortPacket
		}
		msg := body[2:]
		if i := bytes.IndexByte(msg, 0); i >= 0 {
			msg = msg[:i]
		}
		return &ErrorPacket{Code: ErrorCode(binary.BigEndian.Uint16(body)), Message: string(msg)}, nil
	case OpOACK:
		strs, err := splitStrings(body)
		if err != nil {
			return nil, err
		}
		return &OAckPacket{Options: pairs(strs)}, nil
	}
	return nil, fmt.Errorf("%w %d", ErrUnknownOpcode, uint16(op))
}

// splitStrings splits NUL-terminated strings. Bytes after the last NUL are ignored.
func splitStrings(b []byte) ([]string, error) {
	if len(b) > 0 && bytes.IndexByte(b, 0) < 0 {
		return nil, fmt.Errorf("%w: string not NUL-terminated", ErrMalformed)
	}
	var out []string
	for {
		i := bytes.IndexByte(b, 0)
		if i < 0 {
			return out, nil
		}
		out = append(out, string(b[:i]))
		b = b[i+1:]
	}
}

// pairs turns name/value strings into options, dropping an unpaired trailing string and
// empty names (padding).
func pairs(strs []string) []Option {
	var opts []Option
	for i := 0; i+1 < len(strs); i += 2 {
		if strs[i] == "" {
			continue
		}
		opts = append(opts, Option{Name: strs[i], Value: strs[i+1]})
	}
	return opts
}

func appendString(b []byte, s string) ([]byte, error) {
	if strings.IndexByte(s, 0) >= 0 {
		return b, fmt.Errorf("%w: string %q contains NUL", ErrMalformed, s)
	}
	b = append(b, s...)
	return append(b, 0), nil
}

func appendOptions(b []byte, opts []Option) ([]byte, error) {
	var err error
	for _, o := range opts {
		if o.Name == "" {
			return b, fmt.Errorf("%w: empty option name", ErrMalformed)
		}
		if b, err = appendString(b, o.Name); err != nil {
			return b, err
		}
		if b, err = appendString(b, o.Value); err != nil {
			return b, err
		}
	}
	return b, nil
}

// AppendBinary implements Packet.
func (p *RequestPacket) AppendBinary(b []byte) ([]byte, error) {
	if p.Op != OpRRQ && p.Op != OpWRQ {
		return b, fmt.Errorf("%w: request opcode %s", ErrMalformed, p.Op)
	}
	if p.Filename == "" {
		return b, fmt.Errorf("%w: empty filename", ErrMalformed)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(p.Op))
	var err error
	if b, err = appendString(b, p.Filename); err != nil {
		return b, err
	}
	if b, err = appendString(b, p.Mode); err != nil {
		return b, err
	}
	return appendOptions(b, p.Options)
}

// AppendBinary implements Packet.
func (p *DataPacket) AppendBinary(b []byte) ([]byte, error) {
	b = binary.BigEndian.AppendUint16(b, uint16(OpDATA))
	b = binary.BigEndian.AppendUint16(b, p.Block)
	return append(b, p.Data...), nil
}

// AppendBinary implements Packet.
func (p *AckPacket) AppendBinary(b []byte) ([]byte, error) {
	b = binary.BigEndian.AppendUint16(b, uint16(OpACK))
	return binary.BigEndian.AppendUint16(b, p.Block), nil
}

// AppendBinary implements Packet.
func (p *ErrorPacket) AppendBinary(b []byte) ([]byte, error) {
	b = binary.BigEndian.AppendUint16(b, uint16(OpERROR))
	b = binary.BigEndian.AppendUint16(b, uint16(p.Code))
	return appendString(b, p.Message)
}

// AppendBinary implements Packet.
func (p *OAckPacket) AppendBinary(b []byte) ([]byte, error) {
	b = binary.BigEndian.AppendUint16(b, uint16(OpOACK))
	return appendOptions(b, p.Options)
}
