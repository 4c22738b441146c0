// mvtPluginCommon.h - pieces shared by the TensorRT plugins of this library (logging, (de)serialisation, fields,
// the PluginBase / PluginCreatorBase templates that hold the plumbing every plugin and creator has in common, and
// MVT_REGISTER_PLUGIN, which registers a creator under the library's plugin namespace kPLUGIN_NAMESPACE).
//
// Builds against the TensorRT 8.2 .. 11.x headers. TensorRT 10 deprecates IPluginV2DynamicExt / IPluginCreator
// (IPluginV3 is the new interface); they still work, and every file of the glue wraps itself in
// MVT_DEPRECATION_PUSH / MVT_DEPRECATION_POP so that those warnings are silenced here only.
#ifndef MVT_PLUGIN_COMMON_H
#define MVT_PLUGIN_COMMON_H

// TensorRT's own headers leave some parameters unused; that is not ours to warn about.
#if defined(__clang__)
#define MVT_TRT_HEADERS_BEGIN _Pragma("clang diagnostic push") _Pragma("clang diagnostic ignored \"-Wunused-parameter\"")
#define MVT_TRT_HEADERS_END _Pragma("clang diagnostic pop")
#elif defined(__GNUC__)
#define MVT_TRT_HEADERS_BEGIN _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wunused-parameter\"")
#define MVT_TRT_HEADERS_END _Pragma("GCC diagnostic pop")
#else
#define MVT_TRT_HEADERS_BEGIN
#define MVT_TRT_HEADERS_END
#endif

#if defined(__clang__)
#define MVT_DEPRECATION_PUSH                                                                                            \
    _Pragma("clang diagnostic push") _Pragma("clang diagnostic ignored \"-Wdeprecated-declarations\"")
#define MVT_DEPRECATION_POP _Pragma("clang diagnostic pop")
#elif defined(__GNUC__)
#define MVT_DEPRECATION_PUSH                                                                                            \
    _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wdeprecated-declarations\"")
#define MVT_DEPRECATION_POP _Pragma("GCC diagnostic pop")
#elif defined(_MSC_VER)
#define MVT_DEPRECATION_PUSH __pragma(warning(push)) __pragma(warning(disable : 4996))
#define MVT_DEPRECATION_POP __pragma(warning(pop))
#else
#define MVT_DEPRECATION_PUSH
#define MVT_DEPRECATION_POP
#endif

MVT_DEPRECATION_PUSH

MVT_TRT_HEADERS_BEGIN
#include <NvInferRuntime.h>
MVT_TRT_HEADERS_END

#include <cstdint>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <string>
#include <vector>

namespace mvt
{
namespace plugin
{

// Contract (mobilevit_trt/plugin_spec.py PLUGIN_NAMESPACE): the plugin namespace of every plugin and creator of this
// library, and the namespace its creators are registered under (MVT_REGISTER_PLUGIN). ONNX nodes name it in their
// plugin_namespace attribute.
constexpr char const kPLUGIN_NAMESPACE[] = "mobilevit_trt";

// One line on stderr: "[mvt_plugins] <where>: <message>". Never throws.
void logError(char const* where, char const* message) noexcept;
void logError(char const* where, std::string const& message) noexcept;
void logWarning(char const* where, std::string const& message) noexcept;

// Human-readable shape, e.g. "[-1,4,256,96]". Works with Dims of TensorRT 8 (int32) and 10+ (int64).
std::string dimsToString(nvinfer1::Dims const& dims);

// Product of dims.d[begin, end) (all concrete, >= 0).
int64_t volume(nvinfer1::Dims const& dims, int32_t begin, int32_t end) noexcept;

// Element size of the plugin data types this library accepts (0 for any other type).
size_t elementSize(nvinfer1::DataType type) noexcept;

template <typename T>
void writeValue(char*& buffer, T const& value) noexcept
{
    std::memcpy(buffer, &value, sizeof(T));
    buffer += sizeof(T);
}

// Reads one T; false when fewer than sizeof(T) bytes remain.
template <typename T>
bool readValue(char const*& buffer, char const* end, T& value) noexcept
{
    if (buffer == nullptr || end - buffer < static_cast<std::ptrdiff_t>(sizeof(T)))
    {
        return false;
    }
    std::memcpy(&value, buffer, sizeof(T));
    buffer += sizeof(T);
    return true;
}

// The field named `name` in `fc` (nullptr when absent).
nvinfer1::PluginField const* findField(nvinfer1::PluginFieldCollection const* fc, char const* name) noexcept;

// Fields in `fc` whose names are not in `known` (for a warning).
std::string unknownFields(nvinfer1::PluginFieldCollection const* fc, std::vector<nvinfer1::PluginField> const& known);

// Reads a scalar FLOAT32 / INT32 field; on a wrong type or length writes the reason to `error` and returns false.
bool readFloat32Field(nvinfer1::PluginField const& field, float& value, std::string& error);
bool readInt32Field(nvinfer1::PluginField const& field, int32_t& value, std::string& error);

// target = ns (nullptr reads as ""); a failure is logged under `where`. Never throws.
void assignNamespace(std::string& target, char const* ns, char const* where) noexcept;

// What getPluginType / getPluginName and getPluginVersion return, the prefix of the plugin's log lines and the numbers
// of inputs it takes (always 1 output).
struct PluginInfo
{
    char const* name;
    char const* version;
    char const* where;        // e.g. "MVT_LayerNorm plugin"
    uint32_t nbInputsMask;    // bit n set: takes n inputs
    char const* nbInputsText; // the same for messages, e.g. "1 or 3 inputs"
};

inline bool acceptsNbInputs(PluginInfo const& info, int32_t nbInputs) noexcept
{
    return nbInputs >= 0 && nbInputs < 32 && ((info.nbInputsMask >> nbInputs) & 1U) != 0;
}

// Logs "<method>: expects <nbInputsText> and 1 output" under info.where. Never throws.
void logBadNbTensors(PluginInfo const& info, char const* method) noexcept;

// Logs that the creator of plugin `name` / `version` could not be registered under kPLUGIN_NAMESPACE. Never throws.
void logRegistrationFailure(char const* name, char const* version) noexcept;

// The IPluginV2DynamicExt methods that are the same for every plugin of this library: one output of the type of
// input 0, no resources, no workspace, the namespace (kPLUGIN_NAMESPACE unless set otherwise), linear formats, and
// the argument checks and try / catch of configurePlugin and enqueue. Derived (final, copyable) provides
// getSerializationSize, serialize, getOutputDimensions and these (supportsType and checkInputs see only numbers of
// inputs that info() accepts):
//   static PluginInfo const& info() noexcept;
//   static bool supportsType(int32_t pos, nvinfer1::PluginTensorDesc const* inOut) noexcept;  formats are linear
//   std::string checkInputs(nvinfer1::Dims const* dims, int32_t nbInputs) const;  static shape checks, "" when fine
//   int32_t launch(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
//       void const* const* inputs, void* const* outputs, cudaStream_t stream) const;  enqueue, arguments not null
// checkInputs and launch may throw std::exception; PluginBase logs it and fails the call.
template <typename Derived>
class PluginBase : public nvinfer1::IPluginV2DynamicExt
{
public:
    // IPluginV2
    char const* getPluginType() const noexcept override
    {
        return Derived::info().name;
    }
    char const* getPluginVersion() const noexcept override
    {
        return Derived::info().version;
    }
    int32_t getNbOutputs() const noexcept override
    {
        return 1;
    }
    int32_t initialize() noexcept override
    {
        return 0;
    }
    void terminate() noexcept override {}
    void destroy() noexcept override
    {
        delete static_cast<Derived*>(this);
    }
    void setPluginNamespace(char const* pluginNamespace) noexcept override
    {
        assignNamespace(mNamespace, pluginNamespace, Derived::info().where);
    }
    char const* getPluginNamespace() const noexcept override
    {
        return mNamespace.c_str();
    }

    // IPluginV2Ext
    nvinfer1::DataType getOutputDataType(
        int32_t index, nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override
    {
        if (index != 0 || inputTypes == nullptr || nbInputs < 1)
        {
            logError(Derived::info().where, "getOutputDataType: bad index or inputs");
            return nvinfer1::DataType::kFLOAT;
        }
        return inputTypes[0];
    }

    // IPluginV2DynamicExt
    nvinfer1::IPluginV2DynamicExt* clone() const noexcept override
    {
        try
        {
            return new Derived(static_cast<Derived const&>(*this)); // parameters and namespace
        }
        catch (std::exception const& e)
        {
            logError(Derived::info().where, std::string("clone: ") + e.what());
        }
        return nullptr;
    }
    size_t getWorkspaceSize(nvinfer1::PluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override
    {
        (void) inputs;
        (void) nbInputs;
        (void) outputs;
        (void) nbOutputs;
        return 0; // no kernel of this library needs one (attention keeps the N x N scores on chip)
    }
    bool supportsFormatCombination(
        int32_t pos, nvinfer1::PluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept override
    {
        if (inOut == nullptr || !acceptsNbInputs(Derived::info(), nbInputs) || nbOutputs != 1 || pos < 0
            || pos >= nbInputs + nbOutputs)
        {
            logBadNbTensors(Derived::info(), "supportsFormatCombination");
            return false;
        }
        return inOut[pos].format == nvinfer1::TensorFormat::kLINEAR && Derived::supportsType(pos, inOut);
    }
    void configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override
    {
        try
        {
            if (in == nullptr || out == nullptr || nbOutputs != 1 || !acceptsNbInputs(Derived::info(), nbInputs))
            {
                logBadNbTensors(Derived::info(), "configurePlugin");
                return;
            }
            std::vector<nvinfer1::Dims> dims;
            for (int32_t i = 0; i < nbInputs; ++i)
            {
                dims.push_back(in[i].desc.dims);
            }
            std::string const err = static_cast<Derived const&>(*this).checkInputs(dims.data(), nbInputs);
            if (!err.empty())
            {
                logError(Derived::info().where, "configurePlugin: " + err);
            }
        }
        catch (std::exception const& e)
        {
            logError(Derived::info().where, std::string("configurePlugin: ") + e.what());
        }
    }
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override
    {
        (void) workspace;
        try
        {
            if (inputDesc == nullptr || outputDesc == nullptr || inputs == nullptr || outputs == nullptr)
            {
                logError(Derived::info().where, "enqueue: null descriptors or buffers");
                return 1;
            }
            return static_cast<Derived const&>(*this).launch(inputDesc, outputDesc, inputs, outputs, stream);
        }
        catch (std::exception const& e)
        {
            logError(Derived::info().where, std::string("enqueue: ") + e.what());
        }
        return 1;
    }

private:
    std::string mNamespace{kPLUGIN_NAMESPACE};
};

// The IPluginCreator of one plugin. Plugin provides, besides PluginBase's requirements:
//   Plugin(void const* data, size_t length);   from serialize(); throws std::invalid_argument when malformed
//   static Plugin* fromFields(char const* where, nvinfer1::PluginFieldCollection const* fc);
//       the plugin of the creator's fields; logs why under `where` and returns nullptr when they are bad
// The derived creator passes the contract's fields (mobilevit_trt/plugin_spec.py) to the constructor.
template <typename Plugin>
class PluginCreatorBase : public nvinfer1::IPluginCreator
{
public:
    char const* getPluginName() const noexcept override
    {
        return Plugin::info().name;
    }
    char const* getPluginVersion() const noexcept override
    {
        return Plugin::info().version;
    }
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override
    {
        return &mFieldCollection;
    }
    nvinfer1::IPluginV2* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc) noexcept override
    {
        try
        {
            std::string const where = std::string(Plugin::info().where) + " '" + (name != nullptr ? name : "") + "'";
            std::string const unknown = unknownFields(fc, mFields);
            if (!unknown.empty())
            {
                logWarning(where.c_str(), "ignoring unknown fields: " + unknown);
            }
            return withNamespace(Plugin::fromFields(where.c_str(), fc));
        }
        catch (std::exception const& e)
        {
            logError(Plugin::info().where, std::string("createPlugin: ") + e.what());
        }
        return nullptr;
    }
    nvinfer1::IPluginV2* deserializePlugin(
        char const* name, void const* serialData, size_t serialLength) noexcept override
    {
        (void) name;
        try
        {
            return withNamespace(new Plugin(serialData, serialLength));
        }
        catch (std::exception const& e)
        {
            logError(Plugin::info().where, std::string("deserializePlugin: ") + e.what());
        }
        return nullptr;
    }
    void setPluginNamespace(char const* pluginNamespace) noexcept override
    {
        assignNamespace(mNamespace, pluginNamespace, Plugin::info().where);
    }
    char const* getPluginNamespace() const noexcept override
    {
        return mNamespace.c_str();
    }

    PluginCreatorBase(PluginCreatorBase const&) = delete; // mFieldCollection points into mFields
    PluginCreatorBase& operator=(PluginCreatorBase const&) = delete;

protected:
    explicit PluginCreatorBase(std::initializer_list<nvinfer1::PluginField> fields)
        : mFields(fields)
    {
        mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
        mFieldCollection.fields = mFields.data();
    }

private:
    Plugin* withNamespace(Plugin* plugin) const noexcept
    {
        if (plugin != nullptr)
        {
            plugin->setPluginNamespace(mNamespace.c_str());
        }
        return plugin;
    }

    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFieldCollection;
    std::string mNamespace{kPLUGIN_NAMESPACE};
};

// Registers one Creator (a PluginCreatorBase) with getPluginRegistry() under kPLUGIN_NAMESPACE when the library is
// loaded (dlopen / ctypes.CDLL / IPluginRegistry::loadLibrary). TensorRT's REGISTER_TENSORRT_PLUGIN is not used: its
// PluginRegistrar calls registerCreator(instance, "") in every release from 8.2 to 11.x, i.e. namespace "". Like
// TensorRT's own initializePlugin (plugin/InferPlugin.cpp, later plugin/api/inferPlugin.cpp), this sets the creator's
// namespace first, then registers it under the same one. A failure (e.g. a creator of this name, version and namespace
// is already registered) is logged; it never throws.
template <typename Creator>
class PluginRegistrar
{
public:
    PluginRegistrar() noexcept
    {
        mCreator.setPluginNamespace(kPLUGIN_NAMESPACE);
        nvinfer1::IPluginRegistry* const registry = getPluginRegistry();
        if (registry == nullptr || !registry->registerCreator(mCreator, kPLUGIN_NAMESPACE))
        {
            logRegistrationFailure(mCreator.getPluginName(), mCreator.getPluginVersion());
        }
    }

    PluginRegistrar(PluginRegistrar const&) = delete;
    PluginRegistrar& operator=(PluginRegistrar const&) = delete;

private:
    Creator mCreator{};
};

} // namespace plugin
} // namespace mvt

// At namespace scope of the .cpp of each creator, instead of REGISTER_TENSORRT_PLUGIN (which registers under "").
#define MVT_REGISTER_PLUGIN(Creator) static ::mvt::plugin::PluginRegistrar<Creator> mvtPluginRegistrar##Creator {}

MVT_DEPRECATION_POP

#endif // MVT_PLUGIN_COMMON_H
