"""Vietnamese first, English available; times in the province's zone, always with it.

Templates write `_("English text")`; Vietnamese pages look the text up in `VI`
(tests/test_web.py checks every text a template uses has a Vietnamese form).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone, tzinfo

LANGUAGES = ("vi", "en")
ZONE_NAME = "Asia/Ho_Chi_Minh"


def _zone() -> tzinfo:
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo(ZONE_NAME)
    except Exception:  # no tz database: Vietnam has kept UTC+7 without DST since 1975
        return timezone(timedelta(hours=7), "ICT")


ZONE = _zone()


def local(dt: datetime | None, seconds: bool = True) -> str:
    """A stored (naive UTC) time in Asia/Ho_Chi_Minh, with the offset and the zone named."""
    if dt is None:
        return "—"
    shown = dt.replace(tzinfo=UTC).astimezone(ZONE)
    return shown.strftime("%Y-%m-%d %H:%M:%S %z" if seconds else "%Y-%m-%d %H:%M %z") + \
        f" ({ZONE_NAME})"


def short(dt: datetime | None) -> str:
    """For tables, where the footer names the zone: minutes and the offset only."""
    if dt is None:
        return "—"
    return dt.replace(tzinfo=UTC).astimezone(ZONE).strftime("%Y-%m-%d %H:%M %z")


def day_start_utc(value: str) -> datetime:
    """A date typed in the form (a day in Vietnam) as the naive UTC time it starts."""
    day = datetime.strptime(value.strip(), "%Y-%m-%d").replace(tzinfo=ZONE)
    return day.astimezone(UTC).replace(tzinfo=None)


def age(seconds: float, lang: str) -> str:
    seconds = max(0, int(seconds))
    units = (("d", "ngày", 86400), ("h", "giờ", 3600), ("min", "phút", 60), ("s", "giây", 1))
    for en, vi, size in units:
        if seconds >= size or size == 1:
            n = seconds // size
            return f"{n} {vi}" if lang == "vi" else f"{n} {en}"
    return ""


VI: dict[str, str] = {
    # frame
    "Archive console": "Bảng điều khiển lưu trữ",
    "Điện Biên mail relay": "Hệ thống thư điện tử tỉnh Điện Biên",
    "Archive": "Lưu trữ",
    "Integrity": "Toàn vẹn",
    "Access log": "Nhật ký truy cập",
    "Petitions": "Đơn thư",
    "Users": "Người dùng",
    "Health": "Tình trạng",
    "Log out": "Đăng xuất",
    "Signed in as": "Đăng nhập với",
    "role": "vai trò",
    "auditor": "kiểm toán viên",
    "petitions": "cán bộ tiếp dân",
    "admin": "quản trị",
    "Tiếng Việt": "Tiếng Việt",
    "English": "English",
    "Times are in": "Giờ theo múi",
    # login
    "Sign in": "Đăng nhập",
    "User name": "Tên đăng nhập",
    "Password": "Mật khẩu",
    "Wrong user name or password, or the account is locked for a while.":
        "Sai tên đăng nhập hoặc mật khẩu, hoặc tài khoản đang bị khóa tạm thời.",
    "Your session has ended. Please sign in again.":
        "Phiên làm việc đã hết hạn. Vui lòng đăng nhập lại.",
    "The form has expired. Please try again.": "Biểu mẫu đã hết hạn. Vui lòng thử lại.",
    # search
    "Search the archive": "Tìm kiếm trong lưu trữ",
    "Subject, sender or recipient": "Tiêu đề, người gửi hoặc người nhận",
    "Mailbox": "Hộp thư",
    "Direction": "Chiều",
    "any": "tất cả",
    "received": "nhận",
    "sent": "gửi",
    "From date": "Từ ngày",
    "To date": "Đến ngày",
    "Search": "Tìm",
    "No entries match.": "Không có mục nào phù hợp.",
    "Older entries": "Các mục cũ hơn",
    "Recorded": "Thời điểm lưu",
    "From": "Người gửi",
    "To": "Người nhận",
    "Subject": "Tiêu đề",
    "Entry": "Mục",
    "purged": "đã xóa theo thời hạn lưu",
    "Not a date:": "Ngày không hợp lệ:",
    "entries shown": "mục được hiển thị",
    # reason
    "Reason for access": "Lý do truy cập",
    "Why are you reading the archive? The reason is written into the access log with every "
    "message you open or download in this session.":
        "Vì sao bạn xem lưu trữ? Lý do được ghi vào nhật ký truy cập cùng với mỗi thư bạn "
        "mở hoặc tải xuống trong phiên này.",
    "e.g. inspection decision 12/QĐ-TTr": "ví dụ: quyết định thanh tra số 12/QĐ-TTr",
    "Continue": "Tiếp tục",
    "A reason is required.": "Cần nhập lý do.",
    "Reason of this session": "Lý do của phiên này",
    # entry
    "Date": "Ngày",
    "Date header": "Trường Date",
    "Mailbox of the entry": "Hộp thư của mục",
    "Envelope": "Phong bì",
    "Client": "Máy gửi",
    "Login": "Tài khoản gửi",
    "Message": "Thư",
    "Attachments": "Tệp đính kèm",
    "No attachments.": "Không có tệp đính kèm.",
    "Decision record": "Ghi nhận quyết định",
    "No findings: accepted as sent.": "Không có phát hiện: thư được nhận như đã gửi.",
    "Policy": "Chính sách",
    "Code": "Mã",
    "Action": "Xử lý",
    "Article": "Điều",
    "Converted": "Đã chuyển đổi",
    "Download original (.eml)": "Tải thư gốc (.eml)",
    "Download as accepted (.eml)": "Tải thư như đã nhận (.eml)",
    "Text of the HTML part": "Nội dung văn bản của phần HTML",
    "HTML view (sandboxed, scripts never run)":
        "Xem dạng HTML (cách ly, không chạy mã lệnh)",
    "This entry was purged after its retention period; only its hashes remain.":
        "Mục này đã bị xóa khi hết thời hạn lưu trữ; chỉ còn lại mã băm.",
    "Problems found while reading the message": "Vấn đề khi đọc thư",
    "Entry hash": "Mã băm của mục",
    "Size": "Kích thước",
    "bytes": "byte",
    "Type": "Loại",
    "File name": "Tên tệp",
    # integrity
    "Archive integrity": "Tính toàn vẹn của lưu trữ",
    "INTACT": "TOÀN VẸN (INTACT)",
    "TAMPERED": "BỊ THAY ĐỔI (TAMPERED)",
    "First bad entry": "Mục sai đầu tiên",
    "Last verification": "Lần kiểm tra gần nhất",
    "Run a verification now": "Kiểm tra ngay",
    "Verification running": "Đang kiểm tra",
    "entries checked of": "mục đã kiểm tra trên tổng số",
    "This page refreshes by itself.": "Trang này tự làm mới.",
    "No verification has been run from the console yet.":
        "Chưa có lần kiểm tra nào từ bảng điều khiển.",
    "started by": "bắt đầu bởi",
    "finished": "kết thúc",
    "Entries": "Số mục",
    "Checkpoints": "Điểm ký",
    "last covers entry": "điểm cuối bao gồm mục",
    "not yet signed": "chưa được ký",
    "The verification failed to run": "Không chạy được việc kiểm tra",
    "interrupted": "bị gián đoạn",
    "A verification is already running.": "Đang có một lần kiểm tra khác.",
    "Problems": "Các vấn đề",
    # access log
    "Who looked at what, when and why (newest first).":
        "Ai đã xem gì, khi nào và vì sao (mới nhất trước).",
    "When": "Thời điểm",
    "Who": "Người",
    "What": "Nội dung",
    "Why": "Lý do",
    "Only the newest entries are shown; `relay archive access-log` lists them all.":
        "Chỉ hiển thị các mục mới nhất; lệnh `relay archive access-log` liệt kê tất cả.",
    # petitions
    "The petitions register is not enabled on this relay ([petitions] in relay.toml).":
        "Sổ theo dõi đơn thư chưa được bật trên máy chủ này ([petitions] trong relay.toml).",
    "Open": "Đang xử lý",
    "Due soon": "Sắp đến hạn",
    "Overdue": "Quá hạn",
    "All": "Tất cả",
    "Status": "Trạng thái",
    "Show": "Xem",
    "More": "Xem thêm",
    "Case": "Số hồ sơ",
    "Deadline": "Hạn trả lời",
    "Received": "Ngày nhận",
    "Citizen": "Công dân",
    "Assigned to": "Người xử lý",
    "Reported to": "Đã báo cáo",
    "Answered": "Đã trả lời",
    "As of": "Tính đến ngày",
    "No cases.": "Không có hồ sơ nào.",
    "Mailboxes assigned to you": "Hộp thư được phân công cho bạn",
    "None assigned.": "Chưa được phân công hộp thư nào.",
    # admin
    "Web users": "Người dùng bảng điều khiển",
    "Enabled": "Hoạt động",
    "Locked until": "Khóa đến",
    "Last login": "Đăng nhập lần cuối",
    "Mailboxes": "Hộp thư",
    "yes": "có",
    "no": "không",
    "Disable": "Vô hiệu hóa",
    "Enable": "Kích hoạt",
    "Unlock": "Mở khóa",
    "Add users with `relay web user add NAME --role ROLE --password-stdin`.":
        "Thêm người dùng bằng lệnh `relay web user add TÊN --role VAI_TRÒ --password-stdin`.",
    "Relay health": "Tình trạng hệ thống",
    "Queue": "Hàng đợi",
    "messages waiting": "thư đang chờ",
    "held": "bị giữ lại",
    "Last checkpoint": "Điểm ký gần nhất",
    "ago": "trước",
    "none yet": "chưa có",
    "Database": "Cơ sở dữ liệu",
    "reachable": "kết nối được",
    "unreachable": "không kết nối được",
    "Antivirus (clamd)": "Chống virus (clamd)",
    "not configured": "chưa cấu hình",
    "Archive entries": "Số mục lưu trữ",
    "Served by": "Máy chủ phục vụ",
    "OK": "Tốt",
    "Problem": "Có vấn đề",
    # errors
    "Not allowed": "Không được phép",
    "Your role does not allow this page.": "Vai trò của bạn không được xem trang này.",
    "Not found": "Không tìm thấy",
    "There is no such page or entry.": "Không có trang hoặc mục này.",
    "Back": "Quay lại",
}


def translate(text: str, lang: str) -> str:
    return VI.get(text, text) if lang == "vi" else text
