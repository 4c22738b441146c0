// LayerNormPlugin.cpp - TensorRT glue for mvt_layernorm() (kernels/layernorm.cu).
#include "LayerNormPlugin.h"

#include "mvt_kernels.h"

#include <cmath>
#include <exception>
#include <stdexcept>

MVT_DEPRECATION_PUSH

namespace mvt
{
namespace plugin
{

namespace
{
// Contract (mobilevit_trt/plugin_spec.py): op_type, version, namespace. Fields are declared in the creator.
constexpr char const kPLUGIN_NAME[] = "LayerNorm";
constexpr char const kPLUGIN_VERSION[] = "1";
constexpr char const kWHERE[] = "LayerNorm plugin";
constexpr int32_t kNB_INPUTS = 3; // x, gamma, beta

bool epsilonOk(float epsilon)
{
    return std::isfinite(epsilon) && epsilon >= 0.f;
}

// Static checks of the input shapes; an empty string when they are fine. Dims of -1 (dynamic) are not compared.
std::string checkInputs(nvinfer1::Dims const* dims, int32_t nbInputs)
{
    if (nbInputs != kNB_INPUTS)
    {
        return "expects 3 inputs (x, gamma, beta), got " + std::to_string(nbInputs);
    }
    nvinfer1::Dims const& x = dims[0];
    if (x.nbDims < 2)
    {
        return "x must have rank >= 2, got " + dimsToString(x);
    }
    int64_t const c = x.d[x.nbDims - 1];
    for (int32_t i = 1; i < 3; ++i)
    {
        nvinfer1::Dims const& g = dims[i];
        char const* what = i == 1 ? "gamma" : "beta";
        if (g.nbDims != 1)
        {
            return std::string(what) + " must have rank 1, got " + dimsToString(g);
        }
        if (c >= 0 && g.d[0] >= 0 && g.d[0] != c)
        {
            return std::string(what) + " " + dimsToString(g) + " does not match the last dim of x " + dimsToString(x);
        }
    }
    return std::string();
}
} // namespace

LayerNormPlugin::LayerNormPlugin(float epsilon)
    : mEpsilon(epsilon)
{
}

LayerNormPlugin::LayerNormPlugin(void const* data, size_t length)
    : mEpsilon(0.f)
{
    char const* p = static_cast<char const*>(data);
    char const* const end = p + length;
    if (!readValue(p, end, mEpsilon) || p != end || !epsilonOk(mEpsilon))
    {
        throw std::invalid_argument("malformed serialized LayerNorm plugin (" + std::to_string(length) + " bytes)");
    }
}

char const* LayerNormPlugin::getPluginType() const noexcept
{
    return kPLUGIN_NAME;
}

char const* LayerNormPlugin::getPluginVersion() const noexcept
{
    return kPLUGIN_VERSION;
}

int32_t LayerNormPlugin::getNbOutputs() const noexcept
{
    return 1;
}

int32_t LayerNormPlugin::initialize() noexcept
{
    return 0;
}

void LayerNormPlugin::terminate() noexcept {}

size_t LayerNormPlugin::getSerializationSize() const noexcept
{
    return sizeof(mEpsilon);
}

void LayerNormPlugin::serialize(void* buffer) const noexcept
{
    char* p = static_cast<char*>(buffer);
    writeValue(p, mEpsilon);
}

void LayerNormPlugin::destroy() noexcept
{
    delete this;
}

void LayerNormPlugin::setPluginNamespace(char const* pluginNamespace) noexcept
{
    try
    {
        mNamespace = pluginNamespace != nullptr ? pluginNamespace : "";
    }
    catch (std::exception const& e)
    {
        logError(kWHERE, e.what());
    }
}

char const* LayerNormPlugin::getPluginNamespace() const noexcept
{
    return mNamespace.c_str();
}

nvinfer1::DataType LayerNormPlugin::getOutputDataType(
    int32_t index, nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (index != 0 || inputTypes == nullptr || nbInputs < 1)
    {
        logError(kWHERE, "getOutputDataType: bad index or inputs");
        return nvinfer1::DataType::kFLOAT;
    }
    return inputTypes[0];
}

nvinfer1::IPluginV2DynamicExt* LayerNormPlugin::clone() const noexcept
{
    try
    {
        auto* p = new LayerNormPlugin(mEpsilon);
        p->setPluginNamespace(mNamespace.c_str());
        return p;
    }
    catch (std::exception const& e)
    {
        logError(kWHERE, std::string("clone: ") + e.what());
    }
    return nullptr;
}

nvinfer1::DimsExprs LayerNormPlugin::getOutputDimensions(int32_t outputIndex, nvinfer1::DimsExprs const* inputs,
    int32_t nbInputs, nvinfer1::IExprBuilder& exprBuilder) noexcept
{
    (void) exprBuilder;
    try
    {
        if (outputIndex != 0 || inputs == nullptr || nbInputs != kNB_INPUTS)
        {
            logError(kWHERE, "getOutputDimensions: expects output 0 of 3 inputs (x, gamma, beta), got "
                    + std::to_string(nbInputs) + " inputs");
            return nvinfer1::DimsExprs{};
        }
        if (inputs[0].nbDims < 2 || inputs[1].nbDims != 1 || inputs[2].nbDims != 1)
        {
            logError(kWHERE, "getOutputDimensions: x needs rank >= 2 and gamma, beta rank 1");
            return nvinfer1::DimsExprs{};
        }
        return inputs[0];
    }
    catch (std::exception const& e)
    {
        logError(kWHERE, std::string("getOutputDimensions: ") + e.what());
    }
    return nvinfer1::DimsExprs{};
}

bool LayerNormPlugin::supportsFormatCombination(
    int32_t pos, nvinfer1::PluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (inOut == nullptr || nbInputs != kNB_INPUTS || nbOutputs != 1 || pos < 0 || pos >= nbInputs + nbOutputs)
    {
        logError(kWHERE, "supportsFormatCombination: expects 3 inputs and 1 output");
        return false;
    }
    nvinfer1::PluginTensorDesc const& d = inOut[pos];
    if (d.format != nvinfer1::TensorFormat::kLINEAR)
    {
        return false;
    }
    switch (pos)
    {
    case 0: return d.type == nvinfer1::DataType::kFLOAT || d.type == nvinfer1::DataType::kHALF;
    case 1:
    case 2: return d.type == nvinfer1::DataType::kFLOAT; // gamma, beta: always FP32
    default: return d.type == inOut[0].type;             // y: like x
    }
}

void LayerNormPlugin::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    try
    {
        if (in == nullptr || out == nullptr || nbOutputs != 1 || nbInputs != kNB_INPUTS)
        {
            logError(kWHERE, "configurePlugin: expects 3 inputs and 1 output");
            return;
        }
        nvinfer1::Dims dims[kNB_INPUTS] = {in[0].desc.dims, in[1].desc.dims, in[2].desc.dims};
        std::string const err = checkInputs(dims, nbInputs);
        if (!err.empty())
        {
            logError(kWHERE, "configurePlugin: " + err);
        }
    }
    catch (std::exception const& e)
    {
        logError(kWHERE, std::string("configurePlugin: ") + e.what());
    }
}

size_t LayerNormPlugin::getWorkspaceSize(nvinfer1::PluginTensorDesc const* inputs, int32_t nbInputs,
    nvinfer1::PluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept
{
    (void) inputs;
    (void) nbInputs;
    (void) outputs;
    (void) nbOutputs;
    return 0;
}

int32_t LayerNormPlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* outputDesc, void const* const* inputs, void* const* outputs, void* workspace,
    cudaStream_t stream) noexcept
{
    (void) workspace;
    try
    {
        if (inputDesc == nullptr || outputDesc == nullptr || inputs == nullptr || outputs == nullptr)
        {
            logError(kWHERE, "enqueue: null descriptors or buffers");
            return 1;
        }
        nvinfer1::Dims dims[kNB_INPUTS] = {inputDesc[0].dims, inputDesc[1].dims, inputDesc[2].dims};
        std::string const err = checkInputs(dims, kNB_INPUTS);
        if (!err.empty())
        {
            logError(kWHERE, "enqueue: " + err);
            return 1;
        }
        nvinfer1::Dims const& x = inputDesc[0].dims;
        int64_t const cols = x.d[x.nbDims - 1];
        int64_t const rows = volume(x, 0, x.nbDims - 1);
        if (cols < 1 || rows < 0 || inputDesc[1].dims.d[0] != cols || inputDesc[2].dims.d[0] != cols)
        {
            logError(kWHERE, "enqueue: bad runtime shapes x " + dimsToString(x) + ", gamma "
                    + dimsToString(inputDesc[1].dims) + ", beta " + dimsToString(inputDesc[2].dims));
            return 1;
        }
        nvinfer1::DataType const type = inputDesc[0].type;
        if ((type != nvinfer1::DataType::kFLOAT && type != nvinfer1::DataType::kHALF) || outputDesc[0].type != type
            || inputDesc[1].type != nvinfer1::DataType::kFLOAT || inputDesc[2].type != nvinfer1::DataType::kFLOAT)
        {
            logError(kWHERE, "enqueue: x / y must be FP32 or FP16 (same type), gamma / beta FP32");
            return 1;
        }
        int32_t const dtype = type == nvinfer1::DataType::kFLOAT ? MVT_DTYPE_FLOAT32 : MVT_DTYPE_FLOAT16;
        int32_t const status = mvt_layernorm(inputs[0], static_cast<float const*>(inputs[1]),
            static_cast<float const*>(inputs[2]), outputs[0], rows, cols, mEpsilon, dtype, stream);
        if (status != 0)
        {
            logError(kWHERE, std::string("enqueue: mvt_layernorm failed: ") + mvt_status_string(status));
            return 1;
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        logError(kWHERE, std::string("enqueue: ") + e.what());
    }
    return 1;
}

LayerNormPluginCreator::LayerNormPluginCreator()
{
    // The contract's fields, exactly (tests/test_plugin_build.py compares them with plugin_spec.py).
    mFields.emplace_back(nvinfer1::PluginField("epsilon", nullptr, nvinfer1::PluginFieldType::kFLOAT32, 1));
    mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
    mFieldCollection.fields = mFields.data();
}

char const* LayerNormPluginCreator::getPluginName() const noexcept
{
    return kPLUGIN_NAME;
}

char const* LayerNormPluginCreator::getPluginVersion() const noexcept
{
    return kPLUGIN_VERSION;
}

nvinfer1::PluginFieldCollection const* LayerNormPluginCreator::getFieldNames() noexcept
{
    return &mFieldCollection;
}

nvinfer1::IPluginV2* LayerNormPluginCreator::createPlugin(
    char const* name, nvinfer1::PluginFieldCollection const* fc) noexcept
{
    try
    {
        std::string const where = std::string(kWHERE) + " '" + (name != nullptr ? name : "") + "'";
        std::string const unknown = unknownFields(fc, mFields);
        if (!unknown.empty())
        {
            logWarning(where.c_str(), "ignoring unknown fields: " + unknown);
        }
        nvinfer1::PluginField const* f = findField(fc, "epsilon");
        if (f == nullptr)
        {
            logError(where.c_str(), "missing required field 'epsilon' (FLOAT32)");
            return nullptr;
        }
        float epsilon = 0.f;
        std::string err;
        if (!readFloat32Field(*f, epsilon, err))
        {
            logError(where.c_str(), err);
            return nullptr;
        }
        if (!epsilonOk(epsilon))
        {
            logError(where.c_str(), "epsilon must be finite and >= 0, got " + std::to_string(epsilon));
            return nullptr;
        }
        auto* plugin = new LayerNormPlugin(epsilon);
        plugin->setPluginNamespace(mNamespace.c_str());
        return plugin;
    }
    catch (std::exception const& e)
    {
        logError(kWHERE, std::string("createPlugin: ") + e.what());
    }
    return nullptr;
}

nvinfer1::IPluginV2* LayerNormPluginCreator::deserializePlugin(
    char const* name, void const* serialData, size_t serialLength) noexcept
{
    (void) name;
    try
    {
        auto* plugin = new LayerNormPlugin(serialData, serialLength);
        plugin->setPluginNamespace(mNamespace.c_str());
        return plugin;
    }
    catch (std::exception const& e)
    {
        logError(kWHERE, std::string("deserializePlugin: ") + e.what());
    }
    return nullptr;
}

void LayerNormPluginCreator::setPluginNamespace(char const* pluginNamespace) noexcept
{
    try
    {
        mNamespace = pluginNamespace != nullptr ? pluginNamespace : "";
    }
    catch (std::exception const& e)
    {
        logError(kWHERE, e.what());
    }
}

char const* LayerNormPluginCreator::getPluginNamespace() const noexcept
{
    return mNamespace.c_str();
}

REGISTER_TENSORRT_PLUGIN(LayerNormPluginCreator);

} // namespace plugin
} // namespace mvt

MVT_DEPRECATION_POP
